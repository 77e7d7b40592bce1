"""Tiny random llama models for tests, built on the spot.

The tokenizer is the default model's when its converted folder is present
(real multi-byte behaviour), otherwise a small byte-level BPE trained here.
"""

from __future__ import annotations

from pathlib import Path

from inference.convert import random_llama_save

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The capital of France is Paris.",
    "Hello! How can I help you today?",
    "Your order ships within two working days.",
    "Returns are free within thirty days of delivery.",
    "Our shop opens at nine and closes at six.",
    "Grüße aus Köln, ça va? 日本語のテキスト 🙂",
]


def bpe_train(corpus: list[str], specials: list[str], vocab_size: int):
    """A byte-level BPE (a ``tokenizers.Tokenizer``) trained on corpus,
    with specials as its first tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus * 20, trainer=trainer)
    return tokenizer


def _trained_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tokenizer = bpe_train(_CORPUS, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 400)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tokenizer_load(default_model_dir: Path | None):
    from transformers import AutoTokenizer

    if default_model_dir is not None and (default_model_dir / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(default_model_dir))
    return _trained_tokenizer()


def tiny_llama_save(
    destination: Path, *, default_model_dir: Path | None = None, seed: int = 0, layers: int = 2
) -> Path:
    """Save a randomly initialised llama with a real tokenizer to destination."""
    return random_llama_save(
        destination=destination,
        tokenizer=tokenizer_load(default_model_dir),
        seed=seed,
        layers=layers,
    )


def chain_llama_save(
    destination: Path, *, text: str, default_model_dir: Path | None = None
) -> tuple[Path, list[int]]:
    """Save a llama that answers every prompt with exactly ``text`` then
    stops, whatever the sampling: its layers are zeroed so each position
    sees only its own token, and the head maps each token of text to the
    next (the prompt's last token to the first, the last to end of turn).
    Return the folder and the answer's token ids, which must be distinct."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer_load(default_model_dir)
    chain = tokenizer.encode(text, add_special_tokens=False)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True
    )
    if hasattr(prompt, "input_ids"):
        prompt = prompt["input_ids"]
    start = int(prompt[-1])
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if len(set(chain)) != len(chain) or start in chain or eos in chain:
        raise ValueError(f"{text!r} needs distinct tokens: {chain}")
    hidden = 64
    if len(chain) + 1 > hidden:
        raise ValueError("text too long for the chain model")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        embed = model.model.embed_tokens.weight
        head = model.lm_head.weight
        steps = [start, *chain]
        targets = [*chain, eos]
        for slot, (token, following) in enumerate(zip(steps, targets, strict=True)):
            embed[token, slot] = 1.0
            head[following, slot] = 10.0
    destination.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(destination, safe_serialization=True)
    tokenizer.save_pretrained(destination)
    return destination, chain
