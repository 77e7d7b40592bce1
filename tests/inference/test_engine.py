"""The continuous-batching engine on tiny random llama models."""

from __future__ import annotations

import math

import pytest
import torch

from inference.content_filter import FilterResult
from inference.engine import Engine
from inference.engine_types import FinishReason, RequestError
from inference.loading import model_load
from inference.protocol import SamplingError, SamplingParams
from tests.inference.engine_runs import run_engine

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return model_load(tiny_model_dir, device="cpu", dtype="float32")


def _hf_greedy(loaded, prompt: list[int], max_new_tokens: int) -> list[int]:
    output = loaded.model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(loaded.eos_token_ids),
        pad_token_id=loaded.tokenizer.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return output[0, len(prompt) :].tolist()


def _text(events) -> str:
    return "".join(e.text for e in events)


def _prompts(loaded, count: int) -> list[list[int]]:
    vocab = len(loaded.tokenizer)
    generator = torch.Generator().manual_seed(1)
    lengths = [3, 17, 5, 40, 9, 1, 26, 12][:count]
    return [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize(("slots", "budget"), [(4, 16), (8, 1000), (3, 7)])
def test_a_staggered_mixed_batch_matches_hf_generate_token_for_token(tiny, slots, budget):
    engine = Engine(tiny, slots=slots, max_context=256, step_token_budget=budget)
    prompts = _prompts(tiny, 8)
    lengths = [12, 5, 20, 8, 15, 3, 10, 7]
    pairs = list(zip(prompts, lengths, strict=True))
    expected = {f"r{i}": _hf_greedy(tiny, p, n) for i, (p, n) in enumerate(pairs)}
    finals: dict[str, list[int]] = {}
    # Requests arrive every few steps while others prefill and decode, and
    # finish at different times, so rows are reused and moved.
    pending = list(enumerate(pairs))
    step = 0
    while pending or engine.has_work():
        if pending and step % 3 == 0:
            i, (prompt, n) = pending.pop(0)
            params = SamplingParams(temperature=0, max_new_tokens=n)
            engine.submit(f"r{i}", prompt=prompt, params=params)
        for event in engine.step():
            if event.finished:
                assert event.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
                finals[event.request_id] = event.token_ids
        step += 1
        assert step < 2000
    assert finals == expected


def test_chat_messages_go_through_the_template(tiny):
    engine = Engine(tiny, slots=2)
    ids = engine.prompt_ids([{"role": "user", "content": "Hello"}])
    rendered = tiny.tokenizer.decode(ids)
    assert "<|im_start|>user\nHello<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")


def test_cancel_frees_the_slot_within_one_step(tiny):
    engine = Engine(tiny, slots=1, max_context=256)
    params = SamplingParams(temperature=0, max_new_tokens=200)
    engine.submit("a", prompt=[5, 6, 7], params=params)
    engine.submit("b", prompt=[8, 9], params=params)
    for _ in range(4):
        engine.step()
    assert engine.running == 1 and engine.queue_position("b") == 1
    produced_before = len(engine.decoding[0].generated)
    engine.cancel("a")
    events = engine.step()
    ended = [e for e in events if e.request_id == "a"]
    assert [e.finish_reason for e in ended if e.finished] == [FinishReason.CANCELLED]
    assert ended[-1].completion_tokens == produced_before  # nothing after the cancel
    # The freed slot went to b in the same step.
    assert engine.queue_position("b") is None
    assert [r.id for r in (*engine.decoding, *engine.prefilling)] == ["b"]


def test_cancel_of_a_waiting_request_ends_it_without_a_slot(tiny):
    engine = Engine(tiny, slots=1)
    engine.submit("a", prompt=[5, 6], params=SamplingParams(temperature=0, max_new_tokens=50))
    engine.submit("b", prompt=[5, 6], params=GREEDY)
    engine.step()
    engine.cancel("b")
    events = engine.step()
    assert any(e.request_id == "b" and e.finish_reason == "cancelled" for e in events)
    assert engine.queued == 0


def test_long_prompts_are_prefilled_in_chunks_between_decode_steps(tiny):
    engine = Engine(tiny, slots=4, max_context=512, step_token_budget=8)
    engine.submit(
        "short", prompt=[5, 6, 7], params=SamplingParams(temperature=0, max_new_tokens=40)
    )
    engine.step()  # short is prefilled and decoding
    engine.submit("long", prompt=list(range(10, 110)), params=GREEDY)
    for _ in range(14):
        engine.step()
    long_steps = [
        step for step, kind, ids in engine.trace if kind == "prefill" and ids == ("long",)
    ]
    decode_steps = {
        step for step, kind, ids in engine.trace if kind == "decode" and "short" in ids
    }
    assert len(long_steps) >= 10, "a 100-token prompt in chunks of at most 8"
    # Every step that prefilled part of the long prompt also decoded short.
    assert all(step in decode_steps for step in long_steps)


def test_a_short_prompt_is_prefilled_before_a_long_one_that_arrived_first(tiny):
    engine = Engine(tiny, slots=4, max_context=512, step_token_budget=16)
    engine.submit("long", prompt=list(range(10, 200)), params=GREEDY)
    engine.step()
    engine.submit("short", prompt=[5, 6, 7], params=GREEDY)
    events = engine.step()
    assert any(e.request_id == "short" and e.text for e in events) or any(
        r.id == "short" for r in engine.decoding
    )
    assert any(r.id == "long" for r in engine.prefilling)


def test_stop_strings_split_across_tokens_are_never_streamed(tiny):
    engine = Engine(tiny, slots=1, max_context=256)
    free = _run_one(engine, SamplingParams(temperature=0, max_new_tokens=30))
    assert len(free) > 6
    stop = free[3:7]  # spans several tokens in the free-running text
    engine = Engine(tiny, slots=1, max_context=256)
    engine.submit(
        "s",
        prompt=[5, 6, 7],
        params=SamplingParams(temperature=0, max_new_tokens=30, stop=(stop,)),
    )
    events = run_engine(engine)["s"]
    streamed = [e.text for e in events if e.text]
    assert "".join(streamed) == free[: free.index(stop)]
    assert all(stop not in chunk for chunk in streamed)
    assert events[-1].finish_reason == FinishReason.STOP


def _run_one(engine: Engine, params: SamplingParams) -> str:
    engine.submit("x", prompt=[5, 6, 7], params=params)
    return _text(run_engine(engine)["x"])


def test_max_new_tokens_ends_with_length_and_usage(tiny):
    engine = Engine(tiny, slots=1)
    engine.submit("x", prompt=[5, 6, 7], params=SamplingParams(temperature=0, max_new_tokens=5))
    events = run_engine(engine)["x"]
    final = events[-1]
    assert final.finished and final.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
    assert final.prompt_tokens == 3
    assert final.completion_tokens <= 5
    assert final.timings["ttft_s"] is not None and final.timings["queue_s"] is not None


def test_seeded_sampling_is_reproducible(tiny):
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=42, max_new_tokens=15)
    first = _run_one(Engine(tiny, slots=2), params)
    second = _run_one(Engine(tiny, slots=2), params)
    assert first == second


def test_an_output_filter_can_rewrite_and_block(tiny):
    class Upper:
        def push(self, text):
            return FilterResult(text.upper())

        def finish(self):
            return FilterResult("")

    class BlockAfterThree:
        def __init__(self):
            self.seen = 0

        def push(self, text):
            self.seen += 1
            return FilterResult("", block=self.seen >= 3)

        def finish(self):
            return FilterResult("")

    engine = Engine(tiny, slots=2)
    params = SamplingParams(temperature=0, max_new_tokens=20)
    engine.submit("u", prompt=[5, 6, 7], params=params, output_filter=Upper())
    engine.submit("b", prompt=[5, 6, 7], params=params, output_filter=BlockAfterThree())
    events = run_engine(engine)
    assert _text(events["u"]) == _text(events["u"]).upper()
    assert events["b"][-1].finish_reason == FinishReason.CONTENT_FILTER
    assert events["b"][-1].completion_tokens == 3
    assert engine.running == 0


def test_logprobs_stop_once_an_output_filter_shows_other_text_than_the_model_wrote(tiny):
    """Tokens would give away what a filter masked: from the first masked
    piece on, no more log-probabilities; an unchanged text keeps them all."""

    class MaskFourth:
        def __init__(self):
            self.pieces = 0

        def push(self, text):
            self.pieces += 1
            return FilterResult("***" if self.pieces == 4 else text)

        def finish(self):
            return FilterResult("")

    class Same:
        def push(self, text):
            return FilterResult(text)

        def finish(self):
            return FilterResult("")

    engine = Engine(tiny, slots=2, speculative_tokens=0)
    params = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True, logprobs=2)
    engine.submit("m", prompt=[5, 6, 7], params=params, output_filter=MaskFourth())
    engine.submit("s", prompt=[5, 6, 7], params=params, output_filter=Same())
    events = run_engine(engine)
    masked = [len(e.logprobs or []) for e in events["m"]]
    assert sum(masked) == 3 and "***" in _text(events["m"])
    assert sum(len(e.logprobs or []) for e in events["s"]) == 10


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": -1}, "temperature must be between"),
        ({"temperature": float("nan")}, "temperature must be between"),
        ({"top_p": 0}, "top_p must be greater than 0"),
        ({"top_k": -3}, "top_k must be a whole number"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number"),
        ({"seed": "x"}, "seed must be a whole number"),
        ({"stop": [""]}, "each stop string"),
        ({"beam_width": 3}, "unknown sampling parameter"),
    ],
)
def test_absurd_sampling_values_are_refused_with_a_clear_message(params, message):
    with pytest.raises(SamplingError, match=message):
        SamplingParams.from_dict(params)


def test_bad_requests_are_refused_with_a_clear_message(tiny):
    engine = Engine(tiny, slots=1, max_context=64)
    with pytest.raises(RequestError, match="non-empty list"):
        engine.submit("a", messages=[])
    with pytest.raises(RequestError, match="no user message with text"):
        engine.submit("a", messages=[{"role": "user", "content": "   "}])
    with pytest.raises(RequestError, match="role must be"):
        engine.submit("a", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(RequestError, match="the context holds 64"):
        engine.submit("a", prompt=list(range(5, 100)))


def test_the_context_limit_ends_a_generation_with_length(tiny):
    engine = Engine(tiny, slots=1, max_context=16)
    engine.submit(
        "x", prompt=list(range(5, 15)), params=SamplingParams(temperature=0, max_new_tokens=100)
    )
    final = run_engine(engine)["x"][-1]
    assert final.finish_reason in (FinishReason.LENGTH, FinishReason.STOP)
    assert final.prompt_tokens + final.completion_tokens <= 16


def _resident_mib() -> float:
    import os
    from pathlib import Path

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_kv_buffers_hold_memory_only_for_positions_written():
    from inference.kv_cache import _zeros

    before = _resident_mib()
    # 32 slots x 2048 positions x 3 heads x 64 dims: 96 MiB of float32 keys.
    keys = _zeros((32, 3, 2048, 64), torch.float32, torch.device("cpu"))
    assert _resident_mib() - before < 8
    keys[:, :, :16] = 1.0  # the first 16 positions of every slot
    assert _resident_mib() - before < 16
    assert float(keys.sum()) == 32 * 3 * 16 * 64
    assert float(keys[:, :, 16:].abs().sum()) == 0.0


def test_sampling_runs_on_one_thread_and_forwards_on_all(tiny, monkeypatch):
    from inference.sampling import Sampler

    seen: dict[str, set[int]] = {"sample": set(), "forward": set()}
    sample, forward = Sampler.sample, Engine._forward

    def sample_spy(self, logits):
        seen["sample"].add(torch.get_num_threads())
        return sample(self, logits)

    def forward_spy(self, *args, **kwargs):
        with self.model_threads():
            seen["forward"].add(torch.get_num_threads())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(Sampler, "sample", sample_spy)
    monkeypatch.setattr(Engine, "_forward", forward_spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine = Engine(tiny, slots=2, max_context=128)
        engine.submit("a", prompt=[5, 6, 7], params=GREEDY)
        run_engine(engine)
        assert seen == {"sample": {1}, "forward": {2}}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _penalized_greedy(loaded, prompt: list[int], steps: int, frequency: float, presence: float):
    """Greedy decoding by hand with OpenAI's penalties on generated tokens."""
    ids = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = loaded.model(torch.tensor([ids])).logits[0, -1].float()
            for token in set(out):
                logits[token] -= frequency * out.count(token) + presence
            token = int(torch.argmax(logits))
            out.append(token)
            ids.append(token)
            if token in loaded.eos_token_ids:
                break
    return out


@pytest.mark.parametrize(("frequency", "presence"), [(1.5, 0.0), (0.0, 2.0), (0.7, 0.4)])
def test_penalized_greedy_answers_match_a_reference_loop_token_for_token(
    tiny, frequency, presence
):
    engine = Engine(tiny, slots=2, max_context=256, speculative_tokens=0)
    prompts = _prompts(tiny, 2)
    params = SamplingParams(
        temperature=0.0, max_new_tokens=24, frequency_penalty=frequency, presence_penalty=presence
    )
    for index, prompt in enumerate(prompts):
        engine.submit(f"p{index}", prompt=prompt, params=params)
    events = run_engine(engine)
    for index, prompt in enumerate(prompts):
        want = _penalized_greedy(tiny, prompt, 24, frequency, presence)
        assert events[f"p{index}"][-1].token_ids == want
    plain = _hf_greedy(tiny, prompts[0], 24)
    assert events["p0"][-1].token_ids != plain  # the penalties did change the answer


@pytest.mark.parametrize("speculative", [0, 4])
def test_logprobs_match_transformers_for_every_token_and_its_alternatives(tiny, speculative):
    """Greedy with logprobs=5: each chosen token's log-probability and its
    five most likely alternatives equal transformers' (log-softmax of the
    step's logits) within 1e-4; every token is reported exactly once,
    whatever the detokenizer held back."""
    prompt = _prompts(tiny, 4)[3]
    steps = 16
    output = tiny.model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=steps,
        do_sample=False,
        eos_token_id=sorted(tiny.eos_token_ids),
        pad_token_id=tiny.tokenizer.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = output.sequences[0, len(prompt) :].tolist()
    engine = Engine(tiny, slots=2, max_context=256, speculative_tokens=speculative)
    params = SamplingParams(temperature=0.0, max_new_tokens=steps, logprobs=5)
    engine.submit("lp", prompt=prompt, params=params)
    events = run_engine(engine)["lp"]
    got = [entry for event in events for entry in (event.logprobs or [])]
    assert [entry.token for entry in got] == tokens == events[-1].token_ids
    for entry, logits in zip(got, output.logits, strict=True):
        want = torch.log_softmax(logits[0].float(), dim=-1)
        assert entry.logprob == pytest.approx(float(want[entry.token]), abs=1e-4)
        values, ids = torch.topk(want, 5)
        assert [t for t, _ in entry.top] == ids.tolist()
        for (_, value), expected in zip(entry.top, values.tolist(), strict=True):
            assert value == pytest.approx(expected, abs=1e-4)
    # Not asked for, not computed.
    engine.submit("plain", prompt=prompt, params=SamplingParams(temperature=0.0, max_new_tokens=4))
    assert all(event.logprobs is None for event in run_engine(engine)["plain"])


def test_logprobs_follow_the_temperature_and_refuse_more_than_20_alternatives(tiny):
    engine = Engine(tiny, slots=1, max_context=256, speculative_tokens=0)
    params = SamplingParams(temperature=0.5, max_new_tokens=6, seed=3, logprobs=0)
    engine.submit("t", prompt=_prompts(tiny, 1)[0], params=params)
    events = run_engine(engine)["t"]
    got = [entry for event in events for entry in (event.logprobs or [])]
    assert len(got) == len(events[-1].token_ids) and all(entry.top == () for entry in got)
    assert all(entry.logprob <= 0.0 for entry in got)
    with pytest.raises(SamplingError, match="logprobs"):
        SamplingParams.from_dict({"logprobs": 21})


@pytest.mark.parametrize("budget", [7, 256])
def test_prompt_logprobs_match_transformers_whatever_the_chunks(tiny, budget):
    """Each prompt token after the first, with its log-probability given
    the ones before it and its alternatives, as transformers computes
    them; fed in chunks beside another prompt or in one piece."""
    prompt = _prompts(tiny, 4)[3]
    engine = Engine(tiny, slots=2, max_context=256, step_token_budget=budget)
    params = SamplingParams(temperature=0, max_new_tokens=3, prompt_logprobs=3)
    engine.submit("p", prompt=prompt, params=params)
    engine.submit("o", prompt=_prompts(tiny, 2)[1], params=SamplingParams(max_new_tokens=3))
    events = run_engine(engine)
    got = [e for event in events["p"] if event.prompt_logprobs for e in event.prompt_logprobs]
    assert not any(event.prompt_logprobs for event in events["o"])
    with torch.no_grad():
        reference = torch.log_softmax(tiny.model(torch.tensor([prompt])).logits[0].float(), -1)
    # The first token has nothing before it.
    assert got[0].token == prompt[0] and math.isnan(got[0].logprob)
    got = got[1:]
    assert [e.token for e in got] == prompt[1:]
    for position, entry in enumerate(got):
        row = reference[position]
        assert abs(entry.logprob - float(row[entry.token])) < 1e-4
        assert [t for t, _lp in entry.top] == torch.topk(row, 3).indices.tolist()
    # They come before any text of the answer.
    first = next(i for i, e in enumerate(events["p"]) if e.prompt_logprobs)
    assert all(not e.text for e in events["p"][:first])
