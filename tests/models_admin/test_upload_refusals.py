"""Dataset uploads that are refused through the dashboard's upload form:
a file over the size limit, bytes that are not UTF-8 text, a binary file,
lines that are JSON but not objects, an empty file, a file without a valid
line, and text no database can store. Each is answered on the form with
an error that says what is wrong, and nothing is stored."""

from __future__ import annotations

import html
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from models_admin.dashboard.forms.datasets import UPLOAD_MAX_BYTES
from models_admin.models import Dataset, DatasetExample

pytestmark = pytest.mark.django_db

UPLOAD = reverse("dashboard:dataset-upload")
GOOD_LINE = json.dumps(
    {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
).encode()


def _upload(client, data: bytes, *, name: str = "refused.jsonl") -> str:
    """Post the file; return the page's text with entities decoded, after
    checking that the form came back and nothing was stored."""
    response = client.post(
        UPLOAD,
        {"name": "refused", "eval_fraction": "0.1", "file": SimpleUploadedFile(name, data)},
    )
    assert response.status_code == 200
    assert not Dataset.objects.exists()
    assert not DatasetExample.objects.exists()
    page = html.unescape(response.content.decode())
    assert 'value="refused"' in page  # the form keeps what was typed
    return page


def test_a_file_over_the_size_limit_is_refused_by_its_size(client, runner):
    data = GOOD_LINE + b"\n" + b" " * (UPLOAD_MAX_BYTES - len(GOOD_LINE))
    assert len(data) == UPLOAD_MAX_BYTES + 1
    page = _upload(client, data)
    assert f"The file is {len(data):,} bytes; the limit is {UPLOAD_MAX_BYTES:,}." in page


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(
            GOOD_LINE + b"\n" + b'{"messages": "caf\xe9"}\n',
            "not UTF-8 text (byte 0xe9",
            id="latin-1",
        ),
        pytest.param(
            "\ufeff".encode("utf-16-le") + GOOD_LINE.decode().encode("utf-16-le"),
            "not UTF-8 text (byte 0xff",
            id="utf-16",
        ),
        pytest.param(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01",
            "not UTF-8 text (byte 0x89",
            id="png",
        ),
        pytest.param(
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)),
            "not UTF-8 text (byte 0x8b",
            id="gzip",
        ),
    ],
)
def test_bytes_that_are_not_utf8_text_are_refused_naming_the_byte(client, runner, data, problem):
    page = _upload(client, data)
    assert problem in page and "save the file as UTF-8" in page
    assert "Nothing was stored" in page


def test_text_with_nul_bytes_is_refused_as_bad_json(client, runner):
    page = _upload(client, GOOD_LINE[:20] + b"\x00" + GOOD_LINE[20:] + b"\n")
    assert "Line 1" in page and "not valid JSON" in page


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (b"[1, 2, 3]", "an array"),
        (b'"just a string"', '"just a string"'),
        (b"42", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ],
)
def test_json_lines_that_are_not_objects_are_refused(client, runner, line, shown):
    page = _upload(client, GOOD_LINE + b"\n" + line + b"\n")
    assert f"each line must be a JSON object (got {shown})" in page
    assert "Line 2" in page


def test_an_empty_file_is_refused(client, runner):
    page = _upload(client, b"")
    assert "The submitted file is empty." in page


@pytest.mark.parametrize(
    ("data", "problems"),
    [
        pytest.param(b"\n  \r\n\t\n", ["the file has no examples"], id="blank-lines"),
        pytest.param(b"\xef\xbb\xbf\n", ["the file has no examples"], id="bom-only"),
        pytest.param(
            b'{"messages": []}\n{"text": "hi"}\n{not json}\n',
            ['"messages" is empty', 'the object has no "messages" key', "not valid JSON"],
            id="no-valid-line",
        ),
    ],
)
def test_a_file_without_a_valid_line_is_refused(client, runner, data, problems):
    page = _upload(client, data)
    for problem in problems:
        assert problem in page


def test_an_escaped_nul_character_is_refused(client, runner):
    """JSON may spell a NUL character, which PostgreSQL cannot store in
    JSON or text: it is refused on the form, not by the database."""
    nul = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "a\u0000b"},
                {"role": "assistant", "content": "ok"},
            ]
        }
    ).encode()
    assert b"\\u0000" in nul
    page = _upload(client, GOOD_LINE + b"\n" + nul + b"\n")
    assert "Line 2" in page and "NUL" in page


def test_half_a_surrogate_pair_is_refused(client, runner):
    surrogate = (
        b'{"messages": [{"role": "user", "content": "\\ud800"}, '
        b'{"role": "assistant", "content": "ok"}]}'
    )
    page = _upload(client, GOOD_LINE + b"\n" + surrogate + b"\n")
    assert "Line 2" in page and "unpaired surrogate" in page
