"""Structured output: decoding held to a response format's JSON, with the
real llguidance and real tokenizers on tiny random llama models."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys

import pytest
import torch

from inference.loading import LoadedModel, model_load
from inference.structured import (
    MAX_SCHEMA_BYTES,
    CompiledGrammar,
    GrammarMatcher,
    StructuredError,
    grammar_compiler,
    response_format_check,
    response_format_constrains,
)
from tests.conftest import REPO_ROOT
from tests.tiny_models import tiny_llama_save

CUSTOMER = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "vip": {"type": "boolean"},
        "plan": {"enum": ["free", "pro"]},
        "tags": {
            "type": "array",
            "items": {"type": "string", "enum": ["new", "returning", "staff"]},
            "maxItems": 3,
        },
        "note": {"type": ["string", "null"], "maxLength": 8},
    },
    "required": ["name", "age", "vip", "plan", "tags", "note"],
    "additionalProperties": False,
}


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "customer", "schema": schema}}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LoadedModel:
    """The suite's tiny llama: SmolLM2's tokenizer when set-up fetched it."""
    return model_load(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def tiny_bpe(tmp_path_factory) -> LoadedModel:
    """A tiny llama with a 400-token BPE trained on the spot."""
    folder = tiny_llama_save(tmp_path_factory.mktemp("structured") / "bpe", seed=3)
    return model_load(folder, device="cpu", dtype="float32")


@pytest.fixture(params=["tiny", "tiny_bpe"])
def loaded(request) -> LoadedModel:
    return request.getfixturevalue(request.param)


def _compiled(loaded: LoadedModel, response_format: dict) -> CompiledGrammar:
    compiler = grammar_compiler(
        loaded.tokenizer, loaded.model.config.vocab_size, eos_ids=loaded.eos_token_ids
    )
    return compiler.compile(response_format)


def _greedy(
    loaded: LoadedModel,
    matcher: GrammarMatcher,
    prompt: list[int],
    max_new_tokens: int,
    *,
    wrap_up_after: int | None = None,
) -> list[int]:
    """Decode greedily under matcher; the answer's ids, end token left out.
    From wrap_up_after tokens on, favour the tokens that close a string,
    object or array and the end tokens, as a model that wants to stop."""
    tokenizer = loaded.tokenizer
    closing = [tokenizer.convert_tokens_to_ids(t) for t in ('"', "}", "]")]
    favoured = torch.tensor(sorted({*closing, *loaded.eos_token_ids}))
    forward = inspect.signature(loaded.model.forward).parameters
    cache_kwarg = "cache" if "cache" in forward else "past_key_values"
    answer: list[int] = []
    ids = torch.tensor([prompt])
    cache = None
    with torch.inference_mode():
        for step in range(max_new_tokens):
            output = loaded.model(input_ids=ids, use_cache=True, **{cache_kwarg: cache})
            cache = output.past_key_values
            row = matcher.mask(output.logits[0, -1])
            if wrap_up_after is not None and step >= wrap_up_after:
                row[favoured] += 1000.0
            token = int(torch.argmax(row))
            matcher.accept(token)
            if token in loaded.eos_token_ids:
                return answer
            answer.append(token)
            ids = torch.tensor([[token]])
    return answer


def _prompt(loaded: LoadedModel, text: str = "Customer record:") -> list[int]:
    return loaded.tokenizer.encode(text, add_special_tokens=False)


def _allowed_ids(matcher: GrammarMatcher) -> set[int]:
    return {int(i) for i in matcher.allowed().nonzero()[0]}


def _blank_outside_strings(text: str) -> list[str]:
    """The whitespace runs outside string literals, except the one space
    after ", " and ": " that the grammar writes."""
    structure = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    return re.findall(r"(?<![,:]) |[,:] (?=\s)|[\t\n\r]", structure)


def _customer_check(value: object) -> None:
    assert isinstance(value, dict)
    assert set(value) == set(CUSTOMER["required"])
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert type(value["age"]) is int and 0 <= value["age"] <= 150
    assert type(value["vip"]) is bool
    assert value["plan"] in ("free", "pro")
    assert isinstance(value["tags"], list) and len(value["tags"]) <= 3
    assert all(tag in ("new", "returning", "staff") for tag in value["tags"])
    assert value["note"] is None or (isinstance(value["note"], str) and len(value["note"]) <= 8)


@pytest.mark.parametrize("prompt", ["Customer record:", "Hello!", "{"])
def test_greedy_decoding_under_a_schema_gives_json_that_follows_it(loaded, prompt):
    """A random model's greedy answer, masked by the schema's grammar, ends
    by the grammar and is JSON with the schema's keys, types and bounds."""
    matcher = _compiled(loaded, _schema_format(CUSTOMER)).matcher()
    answer = _greedy(loaded, matcher, _prompt(loaded, prompt), max_new_tokens=400)
    assert matcher.finished
    text = loaded.tokenizer.decode(answer)
    _customer_check(json.loads(text))
    assert not _blank_outside_strings(text)


def test_json_object_gives_a_json_object(loaded):
    """Any JSON object: nothing bounds it, but a model that wants to stop
    can only do so by closing it, and no blank space gets in."""
    matcher = _compiled(loaded, {"type": "json_object"}).matcher()
    answer = _greedy(loaded, matcher, _prompt(loaded), max_new_tokens=300, wrap_up_after=40)
    assert matcher.finished
    text = loaded.tokenizer.decode(answer)
    assert isinstance(json.loads(text), dict)
    assert not _blank_outside_strings(text)


def test_a_fixed_answer_parses_when_the_grammar_ends_it(tiny):
    """Feeding the tokens of a valid answer leaves the matcher finished, and
    the text is what json.loads reads back."""
    matcher = _compiled(tiny, _schema_format(CUSTOMER)).matcher()
    value = {"name": "Ana", "age": 41, "vip": True, "plan": "pro", "tags": ["new"], "note": None}
    text = json.dumps(value)
    for token in tiny.tokenizer.encode(text, add_special_tokens=False):
        assert not matcher.finished
        matcher.accept(token)
    assert matcher.finished
    assert json.loads(text) == value


def test_after_the_value_only_the_end_tokens_are_allowed(tiny):
    """Once the object closes, the mask keeps exactly the engine's end ids
    (all of them, not only the tokenizer's eos), in float32 and bfloat16;
    before that it keeps none of them."""
    tokenizer = tiny.tokenizer
    vocab = tiny.model.config.vocab_size + 64  # a padded logits row
    ends = tiny.eos_token_ids | {tokenizer.convert_tokens_to_ids("<|endoftext|>")}
    assert len(ends) > len(tiny.eos_token_ids)
    compiled = grammar_compiler(tokenizer, vocab, eos_ids=ends).compile({"type": "json_object"})
    matcher = compiled.matcher()
    for token in tokenizer.encode('{"a": [1, 2]}', add_special_tokens=False):
        allowed = _allowed_ids(matcher)
        assert token in allowed
        assert not allowed & ends
        assert max(allowed) < len(tokenizer)
        matcher.accept(token)
    assert matcher.finished
    assert _allowed_ids(matcher) == ends
    for dtype in (torch.float32, torch.bfloat16):
        row = matcher.mask(torch.randn(vocab).to(dtype))
        assert row.dtype == dtype
        assert set(torch.isfinite(row).nonzero().flatten().tolist()) == ends
    matcher.accept(min(ends))
    assert matcher.finished


def test_a_row_that_is_not_contiguous_is_masked_alike(tiny):
    """Rows the bit trick cannot view (strided, or another device) go
    through masked_fill_ and come out the same."""
    vocab = tiny.model.config.vocab_size
    matcher = _compiled(tiny, {"type": "json_object"}).matcher()
    matcher.accept(tiny.tokenizer.encode("{", add_special_tokens=False)[0])
    table = torch.randn(vocab, 3)
    expected = matcher.mask(table[:, 1].contiguous())
    strided = matcher.mask(table[:, 1])
    assert not strided.is_contiguous()
    assert torch.equal(strided, expected)
    assert torch.equal(table[:, 1], expected)
    assert set(torch.isfinite(expected).nonzero().flatten().tolist()) == _allowed_ids(matcher)


def test_a_number_that_could_go_on_allows_the_end_beside_more_digits(tiny):
    matcher = _compiled(tiny, _schema_format({"type": "integer"})).matcher()
    for token in tiny.tokenizer.encode("12", add_special_tokens=False):
        matcher.accept(token)
    allowed = _allowed_ids(matcher)
    assert tiny.eos_token_ids <= allowed
    assert not matcher.finished
    matcher.accept(min(tiny.eos_token_ids))
    assert matcher.finished


def test_a_disallowed_token_raises_and_leaves_the_matcher_where_it_was(tiny):
    tokenizer = tiny.tokenizer
    matcher = _compiled(tiny, _schema_format(CUSTOMER)).matcher()
    brace = tokenizer.encode("{", add_special_tokens=False)[0]
    letter = tokenizer.encode("x", add_special_tokens=False)[0]
    for bad in (letter, min(tiny.eos_token_ids), -1, tiny.model.config.vocab_size):
        with pytest.raises(StructuredError, match="does not fit"):
            matcher.accept(bad)
    matcher.accept(brace)
    with pytest.raises(StructuredError):
        matcher.accept(brace)
    assert _allowed_ids(matcher)


def test_the_end_token_is_refused_before_the_value_is_complete(tiny):
    matcher = _compiled(tiny, {"type": "json_object"}).matcher()
    matcher.accept(tiny.tokenizer.encode("{", add_special_tokens=False)[0])
    with pytest.raises(StructuredError):
        matcher.accept(min(tiny.eos_token_ids))


def test_a_fork_goes_on_independently(tiny):
    tokenizer = tiny.tokenizer
    matcher = _compiled(tiny, {"type": "json_object"}).matcher()
    for token in tokenizer.encode('{"a": ', add_special_tokens=False):
        matcher.accept(token)
    fork = matcher.fork()
    for token in tokenizer.encode("1}", add_special_tokens=False):
        fork.accept(token)
    assert fork.finished and not matcher.finished
    for token in tokenizer.encode('"b"}', add_special_tokens=False):
        matcher.accept(token)
    assert matcher.finished


def test_rollback_undoes_accepted_tokens(tiny):
    tokenizer = tiny.tokenizer
    matcher = _compiled(tiny, {"type": "json_object"}).matcher()
    ids = tokenizer.encode('{"a": 1}', add_special_tokens=False)
    for token in ids:
        matcher.accept(token)
    matcher.rollback(1)
    assert not matcher.finished
    matcher.accept(ids[-1])
    assert matcher.finished


@pytest.mark.parametrize(
    ("response_format", "reason"),
    [
        ("json", "response_format must be an object"),
        ({"type": "xml"}, "response_format.type must be"),
        ({"type": "json_schema"}, "json_schema must be an object"),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "schema is missing"),
        ({"type": "json_schema", "json_schema": {"schema": "{}"}}, "schema must be an object"),
        ({"type": "json_schema", "json_schema": {"schema": {}, "strict": "yes"}}, "strict"),
        ({"type": "json_schema", "json_schema": {"schema": {}, "name": 3}}, "name"),
        (
            {"type": "json_schema", "json_schema": {"schema": {"type": "frobnicate"}}},
            "Invalid type: frobnicate",
        ),
        (_schema_format({"type": "string", "pattern": "(("}), "unclosed group"),
        (_schema_format({"$ref": "#/definitions/missing"}), "does not exist"),
        (_schema_format({"type": "string", "format": "shoe-size"}), "Unknown format"),
        (
            _schema_format({"type": "string", "minLength": 5, "maxLength": 2}),
            "Unsatisfiable",
        ),
        (_schema_format({"minimum": float("nan")}), "not valid JSON"),
        (
            _schema_format({"type": "string", "description": "x" * MAX_SCHEMA_BYTES}),
            "too large",
        ),
    ],
)
def test_refused_formats_raise_structured_error_naming_the_problem(tiny, response_format, reason):
    """The check without a tokenizer and the compiler refuse alike, with a
    message fit for a 400 (a ValueError, as request errors are)."""
    with pytest.raises(StructuredError, match=re.escape(reason)) as raised:
        response_format_check(response_format)
    assert isinstance(raised.value, ValueError)
    assert len(str(raised.value)) < 400
    compiler = grammar_compiler(
        tiny.tokenizer, tiny.model.config.vocab_size, eos_ids=tiny.eos_token_ids
    )
    with pytest.raises(StructuredError, match=re.escape(reason)):
        compiler.compile(response_format)


@pytest.mark.parametrize(
    "response_format",
    [
        None,
        {"type": "text"},
        {"type": "json_object"},
        _schema_format(CUSTOMER),
        {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "strict": True}},
        {
            "type": "json_schema",
            "json_schema": {"name": "b", "description": "any", "schema": {"type": "array"}},
        },
    ],
)
def test_formats_that_can_be_followed_pass_the_check(response_format):
    response_format_check(response_format)


def test_only_json_formats_constrain():
    assert not response_format_constrains(None)
    assert not response_format_constrains({"type": "text"})
    assert response_format_constrains({"type": "json_object"})
    assert response_format_constrains(_schema_format(CUSTOMER))
    # A malformed one is not silently dropped: compiling it raises.
    assert response_format_constrains({"type": "xml"})


def test_compilers_and_grammars_are_built_once(tiny):
    vocab = tiny.model.config.vocab_size
    compiler = grammar_compiler(tiny.tokenizer, vocab, eos_ids=tiny.eos_token_ids)
    assert grammar_compiler(tiny.tokenizer, vocab, eos_ids=set(tiny.eos_token_ids)) is compiler
    assert grammar_compiler(tiny.tokenizer, vocab + 32, eos_ids=tiny.eos_token_ids) is not compiler
    first = compiler.compile(_schema_format(CUSTOMER))
    renamed = {"type": "json_schema", "json_schema": {"name": "other", "schema": CUSTOMER}}
    assert compiler.compile(renamed) is first
    assert compiler.compile({"type": "json_object"}) is not first
    with pytest.raises(ValueError, match="no grammar"):
        compiler.compile({"type": "text"})


def test_a_logits_row_of_the_wrong_width_is_refused(tiny):
    matcher = _compiled(tiny, {"type": "json_object"}).matcher()
    with pytest.raises(ValueError, match="one row"):
        matcher.mask(torch.zeros(tiny.model.config.vocab_size + 1))
    with pytest.raises(ValueError, match="one row"):
        matcher.mask(torch.zeros(2, tiny.model.config.vocab_size))


def test_importing_the_module_loads_neither_torch_nor_llguidance():
    """The web process checks formats without paying for torch."""
    code = (
        "import sys, inference.structured as s\n"
        "heavy = {'torch', 'numpy', 'llguidance'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "s.response_format_check({'type': 'json_object'})\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, timeout=60)


@pytest.mark.slow
def test_the_default_model_answers_in_the_schema(default_model_dir):
    """SmolLM2 itself, asked for a customer, answers JSON the schema holds."""
    if default_model_dir is None:
        pytest.fail("the default model is missing: run `make test` (it fetches it first)")
    smollm = model_load(default_model_dir, device="cpu", dtype="float32")
    matcher = _compiled(smollm, _schema_format(CUSTOMER)).matcher()
    prompt = smollm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Invent a shop customer and describe them as JSON."}],
        add_generation_prompt=True,
        tokenize=True,
    )
    if not isinstance(prompt, list):
        prompt = prompt["input_ids"]
    answer = _greedy(smollm, matcher, list(prompt), max_new_tokens=200)
    assert matcher.finished
    _customer_check(json.loads(smollm.tokenizer.decode(answer)))


# --- through the engines ------------------------------------------------------


def test_the_engine_answers_in_the_schema_for_every_answer_beside_free_requests(tiny):
    """Sampled answers (n of them, from one prefill) under a schema all
    parse and follow it, while a plain request decodes in the same batch;
    formats the grammar library refuses are refused with the parameters."""
    from inference.engine import Engine
    from inference.engine_types import FinishReason
    from inference.protocol import SamplingError, SamplingParams
    from tests.inference.engine_runs import run_engine

    engine = Engine(tiny, slots=4, max_context=1024)
    constrained = SamplingParams(
        temperature=1.0, seed=4, n=3, max_new_tokens=400, response_format=_schema_format(CUSTOMER)
    )
    engine.submit("s", prompt=_prompt(tiny, "Customer record:"), params=constrained)
    engine.submit("p", prompt=[5, 6, 7], params=SamplingParams(temperature=0, max_new_tokens=30))
    events = run_engine(engine)
    texts: dict[int, str] = {0: "", 1: "", 2: ""}
    for event in events["s"]:
        texts[event.index] += event.text
        if event.finished:
            assert event.finish_reason == FinishReason.STOP
    for text in texts.values():
        _customer_check(json.loads(text))
    assert len(set(texts.values())) > 1
    assert events["p"][-1].finished
    with pytest.raises(SamplingError, match="response_format"):
        SamplingParams(response_format={"type": "json_schema", "json_schema": {}}).validate()
    with pytest.raises(SamplingError, match="beam search"):
        SamplingParams(beams=2, response_format={"type": "json_object"}).validate()


def test_llama_cpp_answers_in_the_schema_too(tiny_model_dir, tmp_path):
    from inference.llamacpp.engine import LlamaCppEngine
    from inference.llamacpp.export import gguf_folder_build
    from inference.llamacpp.loading import gguf_model_load
    from inference.protocol import SamplingParams
    from tests.inference.engine_runs import run_engine

    folder = gguf_folder_build(tiny_model_dir, tmp_path / "gguf", quantization="f32")
    engine = LlamaCppEngine(gguf_model_load(folder), kv_type="f32", slots=2, threads=1)
    params = SamplingParams(
        temperature=0.8, seed=2, max_new_tokens=400, response_format=_schema_format(CUSTOMER)
    )
    engine.submit("s", prompt=[5, 6, 7, 8], params=params)
    text = "".join(e.text for e in run_engine(engine)["s"])
    _customer_check(json.loads(text))
    engine.close()
