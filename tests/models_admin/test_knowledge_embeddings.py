"""The numpy sentence encoder gives transformers' own BERT embeddings (mean
pooled, unit length) for a tiny random model built here, and the real
all-MiniLM-L6-v2 folder set-up installs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel

from models_admin.knowledge.embeddings import BertEncoder, EmbeddingModelError

TEXTS = [
    "How long do I have to send something back?",
    "refunds",
    "Parcels to Canada take two weeks, and the customs charges are paid on delivery " * 3,
]


def _tiny_bert(folder: Path, *, cls_pooling: bool = False) -> BertModel:
    words = sorted({w.lower().strip("?,.") for t in TEXTS for w in t.split()})
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    folder.mkdir(parents=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    (folder / "1_Pooling").mkdir()
    pooling = {"pooling_mode_mean_tokens": not cls_pooling, "pooling_mode_cls_token": cls_pooling}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return model


def _reference(model: BertModel, folder: Path, texts: list[str], *, cls: bool) -> np.ndarray:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=48)
    tokenizer.no_padding()  # the real model's file pads to 128
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        pooled = hidden[0, 0] if cls else hidden[0].mean(0)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("cls_pooling", [False, True])
def test_the_encoder_equals_transformers_bert(tmp_path, cls_pooling):
    folder = tmp_path / "bert"
    model = _tiny_bert(folder, cls_pooling=cls_pooling)
    encoder = BertEncoder(folder)
    # Batched with padding, in another order than given: each row is the
    # text's own embedding.
    got = encoder.encode(TEXTS, batch_size=2)
    want = _reference(model, folder, TEXTS, cls=cls_pooling)
    assert got.shape == (3, 32)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_folder_of_another_architecture_is_refused(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(EmbeddingModelError, match="BERT-family"):
        BertEncoder(folder)


def test_the_installed_model_embeds_like_sentence_transformers(settings):
    folder = Path(settings.MODEL_DIR) / "all-minilm-l6-v2"
    if not (folder / "model.safetensors").is_file():
        pytest.fail(f"The embedding model is missing at {folder}: run `make model`.")
    encoder = BertEncoder(folder)
    model = BertModel.from_pretrained(folder).eval()
    want = _reference(model, folder, TEXTS[:2], cls=False)
    np.testing.assert_allclose(encoder.encode(TEXTS[:2]), want, atol=2e-5)
    near, far = encoder.encode(["How do I return an item?", "The capital of Peru is Lima."])
    [question] = encoder.encode(["Can I send something back?"])
    assert float(question @ near) > float(question @ far) + 0.2
