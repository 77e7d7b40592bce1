"""GGUF versions: export of a transformers folder, and the llama.cpp
engine serving it with the platform's scheduler, sampler and filters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.content_filter import FilterResult
from inference.engine import Engine
from inference.engine_types import FinishReason
from inference.engines import EngineOptions, engine_open, folder_backend, folder_check
from inference.llamacpp.engine import LlamaCppEngine
from inference.llamacpp.export import ExportError, gguf_folder_build
from inference.llamacpp.loading import gguf_model_load
from inference.llamacpp.runtime import LlamaRuntime
from inference.loading import ModelLoadError, model_load
from inference.protocol import SamplingParams
from tests.inference.engine_runs import run_engine

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def tiny_gguf_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as an unquantized GGUF version folder."""
    return gguf_folder_build(
        tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32", quantization="f32"
    )


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    return model_load(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def tiny_gguf(tiny_gguf_dir):
    return gguf_model_load(tiny_gguf_dir)


def _prompts(tokenizer, count: int, lengths=(3, 17, 5, 40, 9, 1, 26, 12)) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    vocab = len(tokenizer)
    return [
        torch.randint(3, vocab, (n,), generator=generator).tolist() for n in (lengths * 4)[:count]
    ]


def _answers(engine, prompts, params=GREEDY) -> list[list[int]]:
    for index, prompt in enumerate(prompts):
        engine.submit(f"r{index}", prompt=prompt, params=params)
    events = run_engine(engine)
    return [events[f"r{i}"][-1].token_ids for i in range(len(prompts))]


def test_an_exported_folder_computes_the_same_logits_as_transformers(tiny_hf, tiny_gguf_dir):
    assert folder_backend(tiny_gguf_dir) == "llama.cpp"
    folder_check(tiny_gguf_dir)
    prompt = _prompts(tiny_hf.tokenizer, 4)[3]
    runtime = LlamaRuntime(
        tiny_gguf_dir / "model.gguf",
        kv_type="f32",
        sequences=1,
        sequence_tokens=256,
        pool_tokens=256,
        batch_tokens=64,
        threads=1,
    )
    try:
        runtime.decode([(token, i, 0, True) for i, token in enumerate(prompt)])
        ours = np.stack([runtime.logits(i).copy() for i in range(len(prompt))])
    finally:
        runtime.close()
    with torch.no_grad():
        reference = tiny_hf.model(torch.tensor([prompt])).logits[0].numpy()
    # Every position: the rotary layout, norms and tied head came across.
    np.testing.assert_allclose(ours, reference, atol=2e-3, rtol=1e-3)
    assert (ours.argmax(-1) == reference.argmax(-1)).all()


def test_greedy_answers_match_the_transformers_engine_in_any_batch(tiny_hf, tiny_gguf):
    prompts = _prompts(tiny_hf.tokenizer, 8)
    expected = _answers(Engine(tiny_hf, slots=8, max_context=256, speculative_tokens=0), prompts)
    alone = [
        _answers(
            LlamaCppEngine(tiny_gguf, kv_type="f32", slots=1, max_context=256, threads=1), [p]
        )[0]
        for p in prompts[:3]
    ]
    assert alone == expected[:3]
    # Three slots for eight requests, a small step budget: queueing,
    # chunked prefill beside running decodes, rows reused.
    engine = LlamaCppEngine(
        tiny_gguf, kv_type="f32", slots=3, max_context=256, step_token_budget=8, threads=1
    )
    assert _answers(engine, prompts) == expected
    kinds = {kind for _step, kind, _ids in engine.trace}
    assert kinds == {"prefill", "decode"}
    assert sorted(engine._free_rows) == [0, 1, 2]


def test_the_kv_pool_grows_with_use_keeps_answers_and_shrinks_when_idle(tiny_hf, tiny_gguf):
    prompts = _prompts(tiny_hf.tokenizer, 6, lengths=(90, 120, 70))
    params = SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True)
    expected = _answers(Engine(tiny_hf, slots=6, max_context=256, speculative_tokens=0), prompts,
                        params)  # fmt: skip
    engine = LlamaCppEngine(
        tiny_gguf, kv_type="f32", slots=6, max_context=256, kv_tokens=256, threads=1
    )
    start = engine.runtime.pool_tokens
    for index, prompt in enumerate(prompts):
        engine.submit(f"r{index}", prompt=prompt, params=params)
    largest = start
    events: dict[str, list] = {}
    while engine.has_work():
        for event in engine.step():
            events.setdefault(event.request_id, []).append(event)
        largest = max(largest, engine.runtime.pool_tokens)
    assert largest > start  # 6 x ~140 tokens do not fit in 256
    assert [events[f"r{i}"][-1].token_ids for i in range(6)] == expected
    assert engine.runtime.pool_tokens == start  # idle again: memory given back
    assert engine.preemptions == 0


def test_a_capped_pool_preempts_the_newest_request_and_loses_nothing(tiny_hf, tiny_gguf):
    prompts = _prompts(tiny_hf.tokenizer, 4, lengths=(150, 140, 160, 130))
    params = SamplingParams(temperature=0.0, max_new_tokens=60, ignore_eos=True)
    reference = Engine(tiny_hf, slots=4, max_context=256, speculative_tokens=0)
    engine = LlamaCppEngine(
        tiny_gguf, kv_type="f32", slots=4, max_context=256, kv_tokens=256, kv_max_tokens=512
    )
    for target in (reference, engine):
        for index, prompt in enumerate(prompts):
            target.submit(f"r{index}", prompt=prompt, params=params)
    expected, events = run_engine(reference), run_engine(engine)
    assert engine.preemptions > 0
    for index in range(4):
        finals = [e for e in events[f"r{index}"] if e.finished]
        assert len(finals) == 1 and finals[0].finish_reason == FinishReason.LENGTH
        assert finals[0].token_ids == expected[f"r{index}"][-1].token_ids
        # What streamed is the answer once: nothing repeated after a preemption.
        streamed = "".join(e.text for e in events[f"r{index}"])
        assert streamed == "".join(e.text for e in expected[f"r{index}"])


def test_a_prompt_that_starts_like_an_earlier_one_is_fed_only_the_rest(tiny_hf, tiny_gguf):
    first, extra = _prompts(tiny_hf.tokenizer, 2, lengths=(60, 25))
    reference = Engine(tiny_hf, slots=2, max_context=256, speculative_tokens=0)
    engine = LlamaCppEngine(tiny_gguf, kv_type="f32", slots=2, max_context=256)
    answer = _answers(engine, [first])[0]
    assert engine.prefix_hits == 0
    # The next turn: the conversation so far, its answer and a new question.
    follow_up = first + answer + extra
    assert _answers(engine, [follow_up]) == _answers(reference, [follow_up])
    assert engine.prefix_hits >= len(first) + len(answer) - 1
    # The same question again shares all but its last token.
    hits = engine.prefix_hits
    assert _answers(engine, [first])[0] == answer
    assert engine.prefix_hits - hits == len(first) - 1


def test_requests_arriving_together_compute_their_common_start_once(tiny_hf, tiny_gguf):
    shared, first_end, second_end = _prompts(tiny_hf.tokenizer, 3, lengths=(40, 9, 14))
    prompts = [shared + first_end, shared + second_end]
    reference = Engine(tiny_hf, slots=2, max_context=256, speculative_tokens=0)
    engine = LlamaCppEngine(tiny_gguf, kv_type="f32", slots=2, max_context=256)
    assert _answers(engine, prompts) == _answers(reference, prompts)
    # The second waited one step for the first to feed the shared start.
    assert engine.prefix_hits == len(shared)


def test_cached_prefixes_give_way_when_the_pool_is_full(tiny_hf, tiny_gguf):
    prompts = _prompts(tiny_hf.tokenizer, 6, lengths=(120, 110, 100))
    params = SamplingParams(temperature=0.0, max_new_tokens=30, ignore_eos=True)
    reference = Engine(tiny_hf, slots=3, max_context=256, speculative_tokens=0)
    engine = LlamaCppEngine(
        tiny_gguf, kv_type="f32", slots=3, max_context=256, kv_tokens=256, kv_max_tokens=512
    )
    # The first three finish and stay cached; the next three need the room.
    assert _answers(engine, prompts[:3], params) == _answers(reference, prompts[:3], params)
    assert len(engine._prefixes) == 3
    assert _answers(engine, prompts[3:], params) == _answers(reference, prompts[3:], params)
    assert engine.preemptions == 0 or len(engine._prefixes) <= 3


def test_sampling_stops_cancel_and_output_filters_behave_as_in_the_torch_engine(tiny_gguf):
    engine = LlamaCppEngine(tiny_gguf, kv_type="f32", slots=2, max_context=256, threads=1)
    prompt = _prompts(tiny_gguf.tokenizer, 1)[0]
    seeded = SamplingParams(temperature=0.9, top_p=0.9, seed=7, max_new_tokens=16)
    first = _answers(engine, [prompt], seeded)[0]
    assert _answers(engine, [prompt], seeded)[0] == first  # a seed repeats

    class Blocker:
        def push(self, text: str) -> FilterResult:
            return FilterResult("", block=True)

        def finish(self) -> FilterResult:
            return FilterResult("")

    engine.submit("blocked", prompt=prompt, params=GREEDY, output_filter=Blocker())
    engine.submit("cancelled", prompt=prompt, params=SamplingParams(max_new_tokens=200))
    first_step = engine.step()
    engine.cancel("cancelled")
    events = run_engine(engine)
    for event in first_step:
        events.setdefault(event.request_id, []).insert(0, event)
    assert events["blocked"][-1].finish_reason == FinishReason.CONTENT_FILTER
    assert events["cancelled"][-1].finish_reason == FinishReason.CANCELLED
    assert sorted(engine._free_rows) == [0, 1]


def test_engine_open_picks_the_runtime_by_folder(tiny_model_dir, tiny_gguf_dir, tmp_path):
    options = EngineOptions(slots=2, max_context=128)
    assert engine_open(tiny_gguf_dir, options=options).backend == "llama.cpp"
    assert engine_open(tiny_model_dir, device="cpu", options=options).backend == "transformers"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        folder_check(broken)


def test_quantized_folders_are_smaller_and_still_answer(tiny_model_dir, tiny_gguf_dir, tmp_path):
    folder = gguf_folder_build(tiny_model_dir, tmp_path / "q8", quantization="q8_0")
    size = (folder / "model.gguf").stat().st_size
    assert size < (tiny_gguf_dir / "model.gguf").stat().st_size
    assert (folder / "tokenizer.json").is_file()
    engine = LlamaCppEngine(gguf_model_load(folder), slots=1, max_context=128, threads=1)
    assert engine.loaded.dtype == "Q8_0"
    engine.submit("q", messages=[{"role": "user", "content": "Hello"}], params=GREEDY)
    events = run_engine(engine)
    assert events["q"][-1].completion_tokens > 0
    with pytest.raises(ExportError, match="unknown quantization"):
        gguf_folder_build(tiny_model_dir, tmp_path / "bad", quantization="q3_nonsense")
    assert not (tmp_path / "bad").exists()


def test_logprobs_from_llama_cpp_agree_with_the_transformers_engine(tiny_hf, tiny_gguf):
    """The same sampler computes them from llama.cpp's logits: with f32
    weights and KV they agree with the torch engine's to 1e-3."""
    prompt = _prompts(tiny_hf.tokenizer, 1)[0]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, logprobs=3)
    torch_engine = Engine(tiny_hf, slots=1, max_context=256, speculative_tokens=0)
    llama = LlamaCppEngine(tiny_gguf, kv_type="f32", slots=1, max_context=256, threads=1)
    got = {}
    for name, engine in (("torch", torch_engine), ("llama", llama)):
        engine.submit("lp", prompt=prompt, params=params)
        events = run_engine(engine)["lp"]
        got[name] = [entry for event in events for entry in (event.logprobs or [])]
    assert [e.token for e in got["llama"]] == [e.token for e in got["torch"]]
    for mine, theirs in zip(got["llama"], got["torch"], strict=True):
        assert mine.logprob == pytest.approx(theirs.logprob, abs=1e-3)
        assert [t for t, _ in mine.top] == [t for t, _ in theirs.top]


def test_n_answers_and_beam_search_run_on_llama_cpp_as_on_transformers(tiny_hf, tiny_gguf):
    from tests.inference.test_choices_beams import _hf_beams

    prompt = _prompts(tiny_hf.tokenizer, 4)[3]
    engine = LlamaCppEngine(tiny_gguf, kv_type="f32", slots=4, max_context=256, threads=1)
    sampled = SamplingParams(temperature=1.0, top_p=1.0, seed=11, n=3, max_new_tokens=8)
    engine.submit("g", prompt=prompt, params=sampled)
    events = run_engine(engine)["g"]
    answers = {e.index: e.token_ids for e in events if e.finished}
    # The prompt was fed once; each answer is a lone request with its seed.
    assert [ids for _s, kind, ids in engine.trace if kind == "prefill"] == [("g",)]
    for index in range(3):
        lone = SamplingParams(temperature=1.0, top_p=1.0, seed=11 + index, max_new_tokens=8)
        assert answers[index] == _answers(engine, [prompt], lone)[0]
    # Beam search: the same beams as transformers' generate().
    beams = SamplingParams(temperature=0.0, beams=4, n=2, max_new_tokens=10)
    engine.submit("b", prompt=prompt, params=beams)
    finals = {e.index: e.token_ids for e in run_engine(engine)["b"] if e.finished}
    expected = _hf_beams(
        tiny_hf, prompt, beams=4, n=2, max_new_tokens=10, length_penalty=1.0, early_stopping=False
    )
    assert [finals[0], finals[1]] == expected
    assert sorted(engine._free_rows) == [0, 1, 2, 3]


def test_prompt_logprobs_from_llama_cpp_agree_with_transformers(tiny_hf, tiny_gguf):
    prompt = _prompts(tiny_hf.tokenizer, 4)[3]
    engine = LlamaCppEngine(
        tiny_gguf, kv_type="f32", slots=2, max_context=256, step_token_budget=8, threads=1
    )
    # An earlier request with the same start: not shared, every position fed.
    _answers(engine, [prompt])
    params = SamplingParams(temperature=0, max_new_tokens=2, prompt_logprobs=2)
    engine.submit("p", prompt=prompt, params=params)
    got = [e for event in run_engine(engine)["p"] if event.prompt_logprobs
           for e in event.prompt_logprobs]  # fmt: skip
    with torch.no_grad():
        reference = torch.log_softmax(tiny_hf.model(torch.tensor([prompt])).logits[0], -1)
    assert [e.token for e in got] == prompt
    for position, entry in enumerate(got[1:]):
        assert abs(entry.logprob - float(reference[position, entry.token])) < 2e-3
