"""Several answers to one prompt (n) and beam search in the engine, on
tiny random llama models, against transformers' own generate()."""

from __future__ import annotations

import pytest
import torch

from inference.engine import Engine
from inference.engine_types import FinishReason, RequestError
from inference.loading import model_load
from inference.protocol import SamplingError, SamplingParams


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return model_load(tiny_model_dir, device="cpu", dtype="float32")


def _prompt(loaded, length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, len(loaded.tokenizer), (length,), generator=generator).tolist()


def _run(engine: Engine, requests: dict[str, tuple[list[int], SamplingParams]], stagger: int = 0):
    """Submit requests (every stagger steps, or all at once) and run the
    engine dry; return each (id, index)'s final event and text."""
    finals: dict[tuple[str, int], object] = {}
    texts: dict[tuple[str, int], str] = {}
    pending = list(requests.items())
    step = 0
    while pending or engine.has_work():
        if pending and (not stagger or step % stagger == 0):
            batch = pending if not stagger else pending[:1]
            for request_id, (prompt, params) in batch:
                engine.submit(request_id, prompt=prompt, params=params)
            pending = pending[len(batch) :]
        for event in engine.step():
            key = (event.request_id, event.index)
            texts[key] = texts.get(key, "") + event.text
            if event.finished:
                assert key not in finals, f"{key} ended twice"
                finals[key] = event
        step += 1
        assert step < 5000
    return finals, texts


def _hf_beams(
    loaded, prompt, *, beams, n, max_new_tokens, length_penalty, early_stopping, eos=None
):
    eos = eos or loaded.eos_token_ids
    output = loaded.model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=beams,
        num_return_sequences=n,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        eos_token_id=sorted(eos),
        pad_token_id=loaded.tokenizer.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    answers = []
    for row in output[:, len(prompt) :].tolist():
        tokens = []
        for token in row:
            tokens.append(token)
            if token in eos:
                break
        answers.append(tokens)
    return answers


def test_n_answers_share_one_prefill_and_each_follows_its_own_seed(tiny):
    prompt = _prompt(tiny, 30, seed=3)
    params = SamplingParams(temperature=1.0, top_p=1.0, seed=7, n=3, max_new_tokens=9)
    engine = Engine(tiny, slots=4, max_context=128, step_token_budget=64)
    finals, texts = _run(engine, {"g": (prompt, params)})
    assert sorted(finals) == [("g", 0), ("g", 1), ("g", 2)]
    # The prompt was fed once, for the first answer only.
    prefills = [ids for _step, kind, ids in engine.trace if kind == "prefill"]
    assert prefills == [("g",)]
    # Each answer is what a lone request with its seed (seed + index) gives.
    for index in range(3):
        alone = Engine(tiny, slots=1, max_context=128)
        single = SamplingParams(temperature=1.0, top_p=1.0, seed=7 + index, max_new_tokens=9)
        own, own_texts = _run(alone, {"a": (prompt, single)})
        assert finals[("g", index)].token_ids == own[("a", 0)].token_ids
        assert texts[("g", index)] == own_texts[("a", 0)]
    assert len({tuple(finals[("g", i)].token_ids) for i in range(3)}) > 1
    assert engine.running == 0 and engine.ids == set()


def test_n_answers_wait_for_rows_for_all_of_them_and_run_beside_others(tiny):
    engine = Engine(tiny, slots=3, max_context=128, step_token_budget=16)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
    requests = {
        "a": (_prompt(tiny, 5, 1), greedy),
        "g": (_prompt(tiny, 20, 2), SamplingParams(temperature=0.0, n=3, max_new_tokens=5)),
        "b": (_prompt(tiny, 7, 4), greedy),
    }
    finals, _texts = _run(engine, requests, stagger=1)
    assert set(finals) == {("a", 0), ("g", 0), ("g", 1), ("g", 2), ("b", 0)}
    # Greedy answers are the same answer three times.
    assert len({tuple(finals[("g", i)].token_ids) for i in range(3)}) == 1


def test_cancelling_a_group_ends_every_answer_once_and_frees_its_rows(tiny):
    engine = Engine(tiny, slots=4, max_context=128)
    params = SamplingParams(temperature=1.0, seed=1, n=3, max_new_tokens=50, ignore_eos=True)
    engine.submit("g", prompt=_prompt(tiny, 8, 5), params=params)
    for _ in range(3):
        engine.step()
    assert engine.running == 3
    engine.cancel("g")
    events = engine.step()
    ended = sorted(e.index for e in events if e.finished)
    assert ended == [0, 1, 2]
    assert all(e.finish_reason == FinishReason.CANCELLED for e in events if e.finished)
    assert engine.running == 0 and not engine.has_work()


BEAM_CASES = [
    # beams, n, max_new_tokens, length_penalty, early_stopping
    (2, 1, 8, 1.0, False),
    (4, 2, 12, 1.0, False),
    (4, 4, 10, 0.0, "never"),
    (3, 2, 9, 2.0, True),
    (4, 1, 14, -1.0, "never"),
]


def _beam_requests(prompts, beams, n, max_new, penalty, early):
    params = SamplingParams(
        temperature=0.0,
        beams=beams,
        n=n,
        max_new_tokens=max_new,
        length_penalty=penalty,
        early_stopping=early,
    )
    return {f"r{i}": (prompt, params) for i, prompt in enumerate(prompts)}


@pytest.mark.parametrize(("beams", "n", "max_new", "penalty", "early"), BEAM_CASES)
def test_beam_search_matches_transformers_token_for_token(tiny, beams, n, max_new, penalty, early):
    engine = Engine(tiny, slots=16, max_context=256, step_token_budget=16)
    prompts = [_prompt(tiny, length, seed) for seed, length in enumerate((6, 23, 11))]
    requests = _beam_requests(prompts, beams, n, max_new, penalty, early)
    # A plain request decodes beside the searches, so rows move under them.
    requests["plain"] = (_prompt(tiny, 9, 9), SamplingParams(temperature=0.0, max_new_tokens=20))
    finals, _texts = _run(engine, requests, stagger=2)
    for i, prompt in enumerate(prompts):
        expected = _hf_beams(
            tiny, prompt, beams=beams, n=n, max_new_tokens=max_new,
            length_penalty=penalty, early_stopping=early,
        )  # fmt: skip
        got = [finals[(f"r{i}", index)].token_ids for index in range(n)]
        assert got == expected, f"prompt {i}"
    assert engine.running == 0


@pytest.mark.parametrize(("beams", "n", "max_new", "penalty", "early"), BEAM_CASES)
def test_beams_that_end_early_finish_as_transformers_finishes_them(
    tiny, beams, n, max_new, penalty, early
):
    """End tokens the random model often picks, so beams finish at
    different lengths and the stopping rules decide."""
    prompts = [_prompt(tiny, length, seed) for seed, length in enumerate((6, 23, 11), start=20)]
    engine = Engine(tiny, slots=16, max_context=256)
    # Each prompt's best beam's third token: a beam ends there, early.
    eos = {
        _hf_beams(
            tiny,
            prompt,
            beams=beams,
            n=1,
            max_new_tokens=max_new,
            length_penalty=penalty,
            early_stopping=early,
        )[0][2]
        for prompt in prompts
    }
    engine.eos_ids = eos
    requests = _beam_requests(prompts, beams, n, max_new, penalty, early)
    finals, _texts = _run(engine, requests)
    ended_early = 0
    for i, prompt in enumerate(prompts):
        expected = _hf_beams(
            tiny, prompt, beams=beams, n=n, max_new_tokens=max_new,
            length_penalty=penalty, early_stopping=early, eos=eos,
        )  # fmt: skip
        got = [finals[(f"r{i}", index)].token_ids for index in range(n)]
        assert got == expected, f"prompt {i}"
        ended_early += sum(1 for tokens in got if tokens[-1] in eos)
    assert ended_early, "no beam ended on an end token: the case tests nothing"


def test_a_beam_search_streams_its_best_beams_when_it_ends(tiny):
    engine = Engine(tiny, slots=4, max_context=128)
    params = SamplingParams(temperature=0.0, beams=3, n=2, max_new_tokens=10, ignore_eos=True)
    engine.submit("b", prompt=_prompt(tiny, 12, 8), params=params)
    texts: dict[int, list[str]] = {0: [], 1: []}
    ended: dict[int, object] = {}
    steps = 0
    while engine.has_work():
        for event in engine.step():
            if event.text:
                assert event.index not in ended
                texts[event.index].append(event.text)
            if event.finished:
                ended[event.index] = event
        steps += 1
    # One text event per answer, at the end.
    assert [len(texts[0]), len(texts[1])] == [1, 1]
    assert all(e.finish_reason == FinishReason.LENGTH for e in ended.values())
    assert all(e.completion_tokens == 10 for e in ended.values())
    assert engine.running == 0 and engine.ids == set()


def test_engines_refuse_groups_larger_than_their_rows(tiny):
    engine = Engine(tiny, slots=2, max_context=64)
    with pytest.raises(RequestError, match="3 sequences"):
        engine.submit("x", prompt=[5, 6], params=SamplingParams(n=3))
    with pytest.raises(RequestError, match="4 sequences"):
        engine.submit("x", prompt=[5, 6], params=SamplingParams(beams=4))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 17}, "n must be"),
        ({"beams": 2, "n": 3}, "must not exceed beams"),
        ({"beams": 2, "logprobs": 2}, "logprobs are not available with beam search"),
        ({"early_stopping": "sometimes"}, "early_stopping"),
        ({"length_penalty": float("nan")}, "length_penalty"),
    ],
)
def test_bad_group_parameters_are_refused_naming_them(fields, message):
    with pytest.raises(SamplingError, match=message):
        SamplingParams.from_dict(fields)
