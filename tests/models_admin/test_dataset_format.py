"""Dataset files in the training format: what is accepted, how each problem
is reported, and the train/eval split."""

from __future__ import annotations

import json
import random

import pytest

from models_admin.dataset_format import (
    MAX_REPORTED_ERRORS,
    DatasetFormatError,
    LineError,
    jsonl_dump,
    jsonl_parse,
    split_indices,
)


def _line(*messages: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


GOOD = _line(("user", "Hi"), ("assistant", "Hello!"))


def _errors(data: bytes, **limits: int) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as caught:
        jsonl_parse(data, **limits)
    return caught.value


def test_a_valid_file_with_bom_crlf_blank_lines_and_unicode_parses():
    lines = [
        _line(("system", "You are terse."), ("user", "Grüß dich"), ("assistant", "Hallo 👋")),
        "",
        "   \t",
        _line(("user", "1+1?"), ("assistant", "2"), ("user", "and 2+2?"), ("assistant", "4")),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "日本語"},
                    {"role": "assistant", "content": "はい"},
                ]
            },
            ensure_ascii=False,
        ),
        "",
    ]
    data = b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8")
    assert jsonl_parse(data) == [
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Grüß dich"},
            {"role": "assistant", "content": "Hallo 👋"},
        ],
        [
            {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": "and 2+2?"},
            {"role": "assistant", "content": "4"},
        ],
        [{"role": "user", "content": "日本語"}, {"role": "assistant", "content": "はい"}],
    ]


def test_parsing_keeps_only_role_and_content():
    line = json.dumps(
        {
            "id": 7,
            "messages": [
                {"role": "user", "content": "Hi", "name": "ann"},
                {"role": "assistant", "content": "Hello", "weight": 0},
            ],
        }
    )
    assert jsonl_parse(line.encode()) == [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ]


BAD_LINES = [
    pytest.param('{"messages": [', "not valid JSON", id="truncated-json"),
    pytest.param("{'messages': []}", "not valid JSON", id="single-quotes"),
    pytest.param('{"messages": []} x', "column 18", id="json-error-names-column"),
    pytest.param("[1, 2]", "must be a JSON object (got an array)", id="array"),
    pytest.param('"hello"', "must be a JSON object", id="string"),
    pytest.param("null", "must be a JSON object (got null)", id="null"),
    pytest.param('{"conversation": []}', 'no "messages" key', id="no-messages"),
    pytest.param('{"messages": {}}', '"messages" must be a list (got an object)', id="object"),
    pytest.param('{"messages": "hi"}', '"messages" must be a list', id="string-messages"),
    pytest.param('{"messages": []}', '"messages" is empty', id="empty-messages"),
    pytest.param('{"messages": [1]}', "message 1 must be an object (got a number)", id="number"),
    pytest.param(
        '{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}',
        'message 1 has no "role"',
        id="no-role",
    ),
    pytest.param(
        _line(("user", "hi"), ("bot", "yo")),
        '"role" of message 2 must be one of system, user, assistant (got "bot")',
        id="unknown-role",
    ),
    pytest.param(
        '{"messages": [{"role": null, "content": "hi"}]}',
        '"role" of message 1 must be one of system, user, assistant (got null)',
        id="null-role",
    ),
    pytest.param(
        '{"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]}',
        'message 1 has no "content"',
        id="no-content",
    ),
    pytest.param(
        '{"messages": [{"role": "user", "content": 5}]}',
        '"content" of message 1 must be a string (got a number)',
        id="number-content",
    ),
    pytest.param(
        '{"messages": [{"role": "user", "content": ["a"]}]}',
        '"content" of message 1 must be a string (got an array)',
        id="list-content",
    ),
    pytest.param(
        _line(("user", "hi"), ("assistant", " \n\t")),
        '"content" of message 2 is empty',
        id="blank-content",
    ),
    pytest.param(
        _line(("user", ""), ("assistant", "yo")), '"content" of message 1 is empty', id="empty"
    ),
    pytest.param(
        '{"messages": [{"role": "user", "content": "\\ud800"}, '
        '{"role": "assistant", "content": "x"}]}',
        "unpaired surrogate",
        id="lone-surrogate",
    ),
    pytest.param(
        _line(("user", "hi"), ("system", "be nice"), ("assistant", "yo")),
        "message 2 is a system message; only the first message may be one",
        id="late-system",
    ),
    pytest.param(
        _line(("assistant", "Hi"), ("user", "yo"), ("assistant", "ok")),
        'message 1 is "assistant" but should be "user"',
        id="starts-with-assistant",
    ),
    pytest.param(
        _line(("system", "s"), ("assistant", "Hi")),
        'message 2 is "assistant" but should be "user"',
        id="system-then-assistant",
    ),
    pytest.param(
        _line(("user", "a"), ("user", "b"), ("assistant", "c")),
        'message 2 is "user" but should be "assistant"',
        id="two-users",
    ),
    pytest.param(
        _line(("user", "a"), ("assistant", "b"), ("assistant", "c")),
        'message 3 is "assistant" but should be "user"',
        id="two-assistants",
    ),
    pytest.param(
        _line(("user", "a"), ("assistant", "b"), ("user", "c")),
        'must end with an assistant message (the last is "user")',
        id="ends-with-user",
    ),
    pytest.param(
        _line(("system", "s")),
        'must end with an assistant message (the last is "system")',
        id="system-only",
    ),
]


@pytest.mark.parametrize(("bad", "problem"), BAD_LINES)
def test_a_bad_line_is_reported_with_its_number_and_problem(bad, problem):
    data = "\n".join([GOOD, "", bad, GOOD]).encode()
    error = _errors(data)
    assert error.total == 1
    [reported] = error.errors
    assert reported.line == 3
    assert problem in reported.error
    assert str(reported).startswith("line 3: ")


def test_every_bad_line_is_listed_and_nothing_is_returned():
    lines = [GOOD, "nope", GOOD, "[]", "", _line(("user", "dangling")), GOOD]
    error = _errors("\n".join(lines).encode())
    assert [e.line for e in error.errors] == [2, 4, 6]
    assert error.total == 3
    assert "line 2: not valid JSON" in str(error)
    assert "line 6: the conversation must end" in str(error)


def test_only_the_first_fifty_errors_are_kept_but_all_are_counted():
    error = _errors(("oops\n" * 73).encode())
    assert error.total == 73
    assert len(error.errors) == MAX_REPORTED_ERRORS
    assert [e.line for e in error.errors] == list(range(1, 51))
    assert "73 problems (the first 50 are listed)" in str(error)


def test_line_error_reads_as_line_number_and_problem():
    error = LineError(3, '"role" must be one of system, user, assistant (got "bot")')
    assert str(error) == 'line 3: "role" must be one of system, user, assistant (got "bot")'
    assert str(LineError(0, "the file has no examples")) == "the file has no examples"


@pytest.mark.parametrize("data", [b"", b"\n\n", b"  \r\n\t\r\n", b"\xef\xbb\xbf"])
def test_a_file_without_examples_is_one_whole_file_error(data):
    error = _errors(data)
    assert error.errors == [LineError(0, "the file has no examples")]


def test_a_file_over_the_size_limit_is_refused_before_parsing():
    error = _errors((GOOD + "\n").encode() * 10, max_bytes=100)
    [reported] = error.errors
    assert reported.line == 0
    assert "the limit is 100" in reported.error


def test_more_examples_than_the_limit_is_a_whole_file_error():
    data = "\n".join([GOOD] * 4).encode()
    assert len(jsonl_parse(data, max_examples=4)) == 4
    error = _errors(data, max_examples=3)
    assert error.errors[0].line == 0
    assert "more than 3 examples" in error.errors[0].error


def test_text_that_is_not_utf8_names_the_first_bad_line():
    data = (GOOD + "\n" + GOOD + "\n").encode() + b'{"messages": "caf\xe9"}\n' + b"\xff\n"
    [reported] = _errors(data).errors
    assert reported.line == 3
    assert "not UTF-8" in reported.error
    assert "0xe9" in reported.error


WEIRD_SHAPES = [
    "[]",
    "null",
    "0",
    "-1.5e308",
    "NaN",
    "true",
    '""',
    "{}",
    '{"messages": null}',
    '{"messages": {}}',
    '{"messages": [1]}',
    '{"messages": [[]]}',
    '{"messages": [null, {}]}',
    '{"messages": [{"role": "user", "content": 5}]}',
    '{"messages": [{"role": ["user"], "content": "x"}]}',
    '{"messages": [{"role": {"a": 1}, "content": {"b": 2}}]}',
    '{"messages": [{"role": "user", "content": null}]}',
    '{"messages": [[["deep"]]]}',
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    "1" * 10_000,
    "\x00\x01\x02",
    "\ufeff[]",
]


@pytest.mark.parametrize("line", WEIRD_SHAPES, ids=range(len(WEIRD_SHAPES)))
def test_any_json_shape_is_reported_not_raised(line):
    error = _errors(line.encode())
    assert error.total == 1
    assert error.errors[0].line == 1


def test_random_garbage_never_raises_anything_but_a_format_error():
    rng = random.Random(1234)
    pieces = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\n", b"\r\n", b"\xef\xbb\xbf",
              b"\xff", b"\xc3", b'"messages"', b'"role"', b'"content"', b'"user"',
              b'"assistant"', b'"system"', b"null", b"1", b" "]  # fmt: skip
    for _ in range(2000):
        if rng.random() < 0.3:
            data = rng.randbytes(rng.randrange(200))
        else:
            data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(60)))
        try:
            result = jsonl_parse(data)
        except DatasetFormatError as error:
            assert error.errors
            assert all(e.line >= 0 for e in error.errors)
        else:
            assert isinstance(result, list)


ROUND_TRIP = [
    [
        {"role": "system", "content": 'Quote " and backslash \\ and tab \t'},
        {"role": "user", "content": "Zeilen\numbruch, Emoji 🍵, U+2028 \u2028 here"},
        {"role": "assistant", "content": "Carriage\r\nreturn and U+0085 \x85 too"},
    ],
    [{"role": "user", "content": "日本語?"}, {"role": "assistant", "content": "はい。"}],
]


def test_dump_then_parse_gives_back_the_conversations():
    assert jsonl_parse(jsonl_dump(ROUND_TRIP).encode("utf-8")) == ROUND_TRIP


def test_dump_writes_one_compact_line_per_conversation_with_unicode_kept():
    text = jsonl_dump(ROUND_TRIP)
    assert text.endswith("\n")
    assert text.count("\n") == 2
    assert "🍵" in text
    assert '{"messages":[{"role":"system","content":' in text
    assert jsonl_dump([]) == ""


@pytest.mark.parametrize("count", [0, 1, 2, 3, 10, 99, 1000])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5, 0.99])
def test_split_is_disjoint_covers_everything_and_respects_the_bounds(count, fraction):
    train, evaluation = split_indices(count, eval_fraction=fraction, seed=7)
    assert sorted(train + evaluation) == list(range(count))
    assert not set(train) & set(evaluation)
    if count >= 1:
        assert train
    if fraction == 0 or count < 2:
        assert evaluation == []
    else:
        expected = min(max(round(count * fraction), 1), count - 1)
        assert len(evaluation) == expected


def test_split_is_deterministic_per_seed_and_shuffled():
    first = split_indices(100, eval_fraction=0.2, seed=3)
    assert split_indices(100, eval_fraction=0.2, seed=3) == first
    assert split_indices(100, eval_fraction=0.2, seed=4) != first
    assert first[1] != list(range(80, 100))


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_split_refuses_a_fraction_outside_zero_to_one(fraction):
    with pytest.raises(ValueError, match="eval_fraction"):
        split_indices(10, eval_fraction=fraction, seed=0)
