"""Knowledge bases: reading documents into headed passages, importing,
re-importing and deleting sources, the index, ranking on a fixed corpus,
and fetching web pages from a local server."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError

from models_admin.knowledge.chunks import passages_split
from models_admin.knowledge.documents import DocumentError, document_kind, document_parse
from models_admin.models import KnowledgeChunk, KnowledgeIndex, KnowledgeSource
from models_admin.selectors.knowledge import knowledge_cache_clear, knowledge_search
from models_admin.services.knowledge import (
    knowledge_base_create,
    knowledge_file_add,
    knowledge_index_build,
    knowledge_source_delete,
    knowledge_source_fetch,
    knowledge_urls_add,
)
from tests.models_admin.knowledge_files import SHOP_DOCS, pdf_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _words_alone(settings):
    """Search by words alone unless a test brings an embedding model."""
    settings.KNOWLEDGE_EMBEDDING_DIR = ""
    knowledge_cache_clear()


def _base(**fields):
    return knowledge_base_create(name=fields.pop("name", "Help"), **fields)


def _shop():
    base = _base()
    for name, data in SHOP_DOCS.items():
        knowledge_file_add(base=base, filename=name, data=data, queue=False)
    knowledge_index_build(base_id=base.pk)
    return base


# --- reading documents -----------------------------------------------------


def test_markdown_keeps_its_headings_and_ignores_hashes_in_code():
    document = document_parse(
        b"# Guide\n\nIntro.\n\n## Setup\n\nStep one.\n\n```\n# not a heading\n```\n\n"
        b"Setext\n------\n\nUnder it.\n",
        kind="markdown",
    )
    assert document.title == "Guide"
    assert [s.headings for s in document.sections] == [
        ["Guide"],
        ["Guide", "Setup"],
        ["Guide", "Setext"],
    ]
    assert "# not a heading" in document.sections[1].text


def test_html_reads_the_main_content_without_scripts_or_navigation():
    document = document_parse(SHOP_DOCS["candles.html"], kind="html")
    assert document.title == "Candle care"
    text = " ".join(s.text for s in document.sections)
    assert "Trim the wick" in text and "45 hours" in text
    assert "Home | Shop" not in text and "color: red" not in text and "Copyright" not in text
    assert document.sections[-1].headings == ["Candle care", "Burn time"]


def test_a_pdf_gives_one_section_per_page_with_its_title():
    document = document_parse(pdf_bytes(["Gift cards last 24 months.", "Engraving: £6."],
                                        title="Gifts"), kind="pdf")  # fmt: skip
    assert document.title == "Gifts"
    assert [s.headings for s in document.sections] == [["Page 1"], ["Page 2"]]
    assert "24 months" in document.sections[0].text


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"%PDF-1.4 garbage that is not a pdf", "pdf", "could not be read"),
        (b"plain text", "pdf", "not a PDF"),
        (b"\x00\x01\x02binary\x00" * 50, "text", "binary"),
        (b"   \n\n  ", "markdown", "no text"),
    ],
)
def test_unreadable_documents_are_refused_with_the_reason(data, kind, reason):
    with pytest.raises(DocumentError, match=reason):
        document_parse(data, kind=kind)


def test_the_kind_comes_from_the_content_then_the_name_then_the_type():
    assert document_kind(filename="a.txt", data=b"%PDF-1.7\n...") == "pdf"
    assert document_kind(filename="notes.md") == "markdown"
    assert document_kind(filename="page", content_type="text/html; charset=utf-8") == "html"
    with pytest.raises(DocumentError, match="docx"):
        document_kind(filename="letter.docx", data=b"PK\x03\x04")


def test_windows_1252_text_is_read():
    document = document_parse("Caf\u00e9 hours: 9\u201317".encode("cp1252"), kind="text")
    assert "Café" in document.sections[0].text


def test_long_sections_are_split_into_passages_under_the_same_heading():
    sentence = "Our warehouse packs every order with recycled paper and care. "
    document = document_parse(
        ("# Packing\n\n" + sentence * 60 + "\n\n" + sentence * 60).encode(), kind="markdown"
    )
    passages = passages_split(document)
    assert len(passages) >= 4
    assert all(p.heading == "Packing" for p in passages)
    assert all(len(p.text.split()) <= 220 for p in passages)
    # Nothing is lost or repeated.
    assert sum(len(p.text.split()) for p in passages) == 120 * len(sentence.split())


# --- importing -----------------------------------------------------------


def test_an_import_stores_headed_passages_and_the_index_finds_them():
    base = _shop()
    source = KnowledgeSource.objects.get(base=base, filename="returns.md")
    assert (source.status, source.version, source.title) == ("ready", 1, "Returns")
    assert source.chunk_count == KnowledgeChunk.objects.filter(source=source).count() == 2
    found = knowledge_search(base=base, query="How many days do I have to return something?")
    assert found.found
    assert found.passages[0].heading == "Returns › Return window"
    assert found.passages[0].title == "Returns"


def test_a_reimport_replaces_the_passages_and_a_bad_one_keeps_them():
    base = _shop()
    before = set(KnowledgeChunk.objects.filter(source__filename="returns.md").values_list("pk"))
    knowledge_file_add(
        base=base, filename="returns.md", data=b"# Returns\n\nReturns are free for 60 days.\n"
    )
    source = KnowledgeSource.objects.get(base=base, filename="returns.md")
    assert source.version == 2 and source.chunk_count == 1
    after = KnowledgeChunk.objects.filter(source=source)
    assert not before & set(after.values_list("pk"))
    assert "60 days" in after.get().text
    with pytest.raises(ValidationError, match="could not be read"):
        knowledge_file_add(base=base, filename="returns.md", data=b"%PDF-1.4 broken")
    source.refresh_from_db()
    assert source.version == 2 and KnowledgeChunk.objects.filter(source=source).count() == 1


def test_a_refused_file_stores_nothing(settings):
    base = _base()
    settings.KNOWLEDGE_MAX_FILE_BYTES = 2048
    with pytest.raises(ValidationError, match="limit"):
        knowledge_file_add(base=base, filename="big.md", data=b"# Big\n\n" + b"word " * 1000)
    with pytest.raises(ValidationError, match="cannot be read"):
        knowledge_file_add(base=base, filename="letter.docx", data=b"PK\x03\x04 zip")
    assert not KnowledgeSource.objects.exists() and not KnowledgeChunk.objects.exists()


def test_deleting_a_source_removes_its_passages_from_answers():
    base = _shop()
    query = "How long does the large candle burn?"
    assert knowledge_search(base=base, query=query).passages[0].title == "Candle care"
    source = KnowledgeSource.objects.get(base=base, filename="candles.html")
    knowledge_source_delete(source=source, queue=False)
    assert not KnowledgeChunk.objects.filter(source_id=source.pk).exists()
    # Until the index is rebuilt, the passages that are gone are skipped.
    assert all(p.title != "Candle care" for p in knowledge_search(base=base, query=query).passages)
    index = knowledge_index_build(base_id=base.pk)
    assert index is not None and index.version == 2
    assert index.chunk_count == KnowledgeChunk.objects.filter(base=base).count()


def test_an_index_already_current_is_not_built_again():
    base = _shop()
    first = KnowledgeIndex.objects.get(base=base)
    again = knowledge_index_build(base_id=base.pk)
    assert again is not None and again.version == first.version


def test_each_change_queues_one_index_build_after_commit(
    django_capture_on_commit_callbacks, monkeypatch
):
    from models_admin.tasks import knowledge_index_build_task

    queued = []
    monkeypatch.setattr(knowledge_index_build_task, "delay", queued.append)
    base = _base()
    with django_capture_on_commit_callbacks(execute=True):
        knowledge_file_add(base=base, filename="returns.md", data=SHOP_DOCS["returns.md"])
    assert queued == [base.pk]
    assert not KnowledgeIndex.objects.filter(base=base).exists()  # the task builds it
    assert knowledge_index_build_task(base.pk) == "v1"
    assert KnowledgeIndex.objects.get(base=base).chunk_count == 2


# --- ranking -------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "heading"),
    [
        ("When do I get my refund?", "Returns › Refund timing"),
        ("What does shipping cost?", "Shipping › Costs"),
        ("Do you deliver to Norway?", "Shipping › Countries"),
        ("How long should the wick be?", "Candle care"),
        ("how many hours will the big soy candle last", "Candle care › Burn time"),
    ],
)
def test_questions_rank_the_passage_that_answers_them_first(question, heading):
    base = _shop()
    retrieval = knowledge_search(base=base, query=question)
    assert retrieval.found
    assert retrieval.passages[0].heading == heading


def test_an_unrelated_question_finds_nothing():
    base = _shop()
    for question in ("What is the capital of Peru?", "Tell me a joke about penguins"):
        assert not knowledge_search(base=base, query=question).found


def test_an_index_survives_the_trip_through_the_database():
    base = _shop()
    knowledge_cache_clear()  # read back from the stored bytes
    retrieval = knowledge_search(base=base, query="refund card working days")
    assert retrieval.index_version == 1
    assert retrieval.passages[0].heading == "Returns › Refund timing"


def test_dense_search_ranks_by_meaning_when_the_embedding_model_is_there(settings):
    from pathlib import Path

    folder = Path(settings.MODEL_DIR) / "all-minilm-l6-v2"
    if not (folder / "model.safetensors").is_file():
        pytest.fail(f"The embedding model is missing at {folder}: run `make model`.")
    settings.KNOWLEDGE_EMBEDDING_DIR = str(folder)
    base = _shop()
    index = KnowledgeIndex.objects.get(base=base)
    assert index.embedding_key.startswith("all-minilm-l6-v2:")
    # No word in common with the passage: only its meaning matches.
    retrieval = knowledge_search(base=base, query="Can I send back stuff I bought a week ago?")
    assert retrieval.dense and retrieval.found
    assert retrieval.passages[0].heading == "Returns › Return window"
    assert not knowledge_search(base=base, query="Who painted the Mona Lisa?").found
    # Passages keep their vectors: a rebuild embeds only what is new.
    assert not KnowledgeChunk.objects.filter(base=base, embedding__isnull=True).exists()


# --- fetching web pages ----------------------------------------------------


class _Pages(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path == "/help/returns.html":
            body = SHOP_DOCS["candles.html"].replace(b"Candle care", b"Returns page")
            self._send(200, body, "text/html; charset=utf-8")
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/help/returns.html")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, b"late", "text/plain")
        elif self.path == "/big":
            self._send(200, b"x" * 50_000, "text/plain")
        elif self.path == "/image":
            self._send(200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "image/png")
        else:
            self._send(404, b"missing", "text/plain")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def site(settings) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    settings.KNOWLEDGE_FETCH_PRIVATE = True
    settings.KNOWLEDGE_FETCH_TIMEOUT = 0.5
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _fetch(base, url):
    source = knowledge_urls_add(base=base, urls=[url], queue=False)[0]
    knowledge_source_fetch(source_id=source.pk)
    source.refresh_from_db()
    return source


def test_a_page_is_fetched_after_redirects_and_imported(site):
    base = _base()
    source = _fetch(base, f"{site}/moved")
    assert (source.status, source.title, source.document_kind) == ("ready", "Returns page", "html")
    assert source.chunk_count == 2


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing", "404"),
        ("/slow", "seconds"),
        ("/big", "limit"),
        ("/image", "cannot be read"),
    ],
)
def test_a_page_that_cannot_be_had_marks_its_source_failed(site, settings, path, reason):
    settings.KNOWLEDGE_MAX_FILE_BYTES = 10_000
    source = _fetch(_base(), f"{site}{path}")
    assert source.status == "failed"
    assert reason in source.error
    assert source.chunk_count == 0


def test_a_failed_fetch_keeps_the_passages_of_the_last_good_one(site):
    base = _base()
    source = _fetch(base, f"{site}/help/returns.html")
    assert source.status == "ready"
    KnowledgeSource.objects.filter(pk=source.pk).update(url=f"{site}/missing")
    source = _fetch(base, f"{site}/missing")
    assert source.status == "failed"
    assert KnowledgeChunk.objects.filter(source=source).count() == 2


def test_local_addresses_are_refused_unless_allowed(site, settings):
    settings.KNOWLEDGE_FETCH_PRIVATE = False
    source = _fetch(_base(), f"{site}/help/returns.html")
    assert source.status == "failed"
    assert "private or local network" in source.error


def test_addresses_are_checked_before_anything_is_stored():
    base = _base()
    with pytest.raises(ValidationError, match="http"):
        knowledge_urls_add(base=base, urls=["https://ok.example/a", "file:///etc/passwd"])
    assert not KnowledgeSource.objects.exists()
