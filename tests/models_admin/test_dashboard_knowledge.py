"""The dashboard's knowledge area over HTTP: who may look and who may
change, the list of bases, creating and editing one, uploading files
(good ones imported, each bad one named with its reason), web addresses,
deleting and fetching sources again, the test box, the hit rate and the
gaps, and the knowledge base of a widget site."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from chat.models import Conversation, Message, WidgetSite, WidgetVisitor
from chat.services.knowledge import INSTRUCTIONS
from chat.services.widget_sites import widget_site_save
from models_admin.dashboard.forms.knowledge import KnowledgeUploadForm, size_text
from models_admin.demo_knowledge import DEMO_KNOWLEDGE_NAME
from models_admin.models import (
    KnowledgeBase,
    KnowledgeChunk,
    KnowledgeIndex,
    KnowledgeSource,
    ReviewEvent,
)
from models_admin.models.knowledge import NOTHING_FOUND_TEXT
from models_admin.selectors.knowledge import knowledge_cache_clear
from models_admin.services import knowledge as knowledge_services
from models_admin.services.knowledge import (
    knowledge_base_create,
    knowledge_file_add,
    knowledge_index_build,
)
from tests.factories import UserFactory
from tests.models_admin.conftest import grant
from tests.models_admin.knowledge_files import SHOP_DOCS, pdf_bytes

pytestmark = pytest.mark.django_db

LIST = reverse("dashboard:knowledge")
NEW = reverse("dashboard:knowledge-new")
DEMO = reverse("dashboard:knowledge-demo")
EMBEDDING_DIR = Path(django_settings.MODEL_DIR) / "all-minilm-l6-v2"


@pytest.fixture(autouse=True)
def _words_alone(settings):
    """Search by words alone unless a test brings the embedding model."""
    settings.KNOWLEDGE_EMBEDDING_DIR = ""
    knowledge_cache_clear()
    yield
    knowledge_cache_clear()


@pytest.fixture(autouse=True)
def queued(monkeypatch):
    """Index builds and fetches queued after commit, instead of on Celery:
    builds run at once (as the worker would), fetches are only recorded
    (tests never reach the internet)."""
    calls: dict[str, list[int]] = {"builds": [], "fetches": []}

    def build(*, base_id):
        calls["builds"].append(base_id)
        knowledge_index_build(base_id=base_id)

    monkeypatch.setattr(knowledge_services, "knowledge_index_queue", build)
    monkeypatch.setattr(
        knowledge_services,
        "knowledge_fetch_queue",
        lambda *, source_id: calls["fetches"].append(source_id),
    )
    return calls


@pytest.fixture
def manager(client):
    user = UserFactory(username="librarian", is_staff=True)
    grant(user, "manage_knowledge")
    client.force_login(user)
    return user


def _shop(name="Help center", **fields):
    base = knowledge_base_create(name=name, **fields)
    for filename, data in SHOP_DOCS.items():
        knowledge_file_add(base=base, filename=filename, data=data, queue=False)
    knowledge_index_build(base_id=base.pk)
    return base


@pytest.fixture
def shop():
    return _shop()


def _page(base):
    return reverse("dashboard:knowledge-base", args=[base.pk])


def _url(name, base, *args):
    return reverse(f"dashboard:knowledge-{name}", args=[base.pk, *args])


def _settings_form(**fields):
    data = {
        "name": "Manuals",
        "description": "How to use what we sell.",
        "in_chat": "on",
        "passages": "5",
        "min_similarity": "0.4",
        "min_match": "0.25",
        "nothing_found": "",
    }
    data.update(fields)
    return {name: value for name, value in data.items() if value is not None}


def _field_html(page: str, name: str) -> str:
    """The markup of one form field's wrapper, errors included."""
    match = re.search(rf'<div class="field[^"]*" data-field="{name}".*?\n</div>', page, re.S)
    assert match, f"no field {name}"
    return match.group(0)


def _flashes(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def _text(response) -> str:
    return html.unescape(response.content.decode())


# --- access -------------------------------------------------------------------


def _pages(base, source):
    return [
        LIST,
        NEW,
        _page(base),
        _page(base) + "?q=returns",
        _url("delete", base),
        _url("gaps", base),
        _url("source-delete", base, source.pk),
    ]


def _posts(base, source):
    return [
        (NEW, _settings_form()),
        (DEMO, {}),
        (_page(base), _settings_form()),
        (_url("delete", base), {}),
        (_url("rebuild", base), {}),
        (_url("upload", base), {}),
        (_url("urls", base), {"urls": "https://shop.example/faq"}),
        (_url("source-fetch", base, source.pk), {}),
        (_url("source-delete", base, source.pk), {}),
    ]


def test_anonymous_visitors_are_sent_to_log_in(client, shop):
    source = shop.sources.first()
    for url in _pages(shop, source):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    for url, data in _posts(shop, source):
        assert client.post(url, data).status_code == 302, url


def test_accounts_that_are_not_staff_are_refused(client, shop):
    client.force_login(UserFactory(username="member"))
    source = shop.sources.first()
    for url in _pages(shop, source):
        assert client.get(url).status_code == 403, url
    for url, data in _posts(shop, source):
        assert client.post(url, data).status_code == 403, url
    assert KnowledgeBase.objects.count() == 1 and shop.sources.count() == 3


def test_staff_without_the_right_may_look_and_test_but_change_nothing(client, viewer, shop):
    source = shop.sources.first()
    page = client.get(LIST).content.decode()
    assert "Help center" in page
    for testid in ("create-demo", "new-base", "new-base-form"):
        assert f'data-testid="{testid}"' not in page
    assert "models_admin.manage_knowledge" in page

    response = client.get(_page(shop) + "?q=refund")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="read-only"' in page and 'data-testid="test-result"' in page
    for testid in ("add-documents", "upload-form", "rebuild", "save-base", "delete-base"):
        assert f'data-testid="{testid}"' not in page
    assert "disabled" in _field_html(page, "name")

    for url, data in _posts(shop, source):
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert "models_admin.manage_knowledge" in response.content.decode()
    shop.refresh_from_db()
    assert shop.name == "Help center" and shop.sources.count() == 3
    assert KnowledgeBase.objects.count() == 1
    for url in (NEW, _url("delete", shop), _url("source-delete", shop, source.pk)):
        assert client.get(url).status_code == 403, url


def test_the_nav_links_to_the_knowledge_area_after_filters(client, viewer):
    page = client.get(reverse("dashboard:home")).content.decode()
    assert page.index(reverse("dashboard:filters")) < page.index(LIST)
    assert 'aria-current="page">Knowledge' in client.get(LIST).content.decode()


# --- the list ------------------------------------------------------------------


def test_the_list_shows_sources_passages_index_and_the_chat_flag(client, viewer, shop):
    KnowledgeSource.objects.create(
        base=shop, kind="url", url="https://shop.example/a", status="failed", error="404"
    )
    KnowledgeSource.objects.create(base=shop, kind="url", url="https://shop.example/b")
    quiet = knowledge_base_create(name="Drafts")
    knowledge_file_add(base=quiet, filename="a.md", data=b"# A\n\nSome text.", queue=False)
    KnowledgeBase.objects.filter(pk=shop.pk).update(in_chat=True)

    page = client.get(LIST).content.decode()
    row = re.search(rf'<tr data-base="{shop.pk}">.*?</tr>', page, re.S).group(0)
    counts = re.sub(
        r"<[^>]+>", "", re.search(r'data-testid="source-counts">(.*?)</td>', row).group(1)
    )
    assert counts.split() == ["3", "/", "1", "/", "1"]
    passages = sum(s.chunk_count for s in shop.sources.filter(status="ready"))
    assert f'<td class="num">{passages}</td>' in row
    assert "v1" in row and "current" in row and "by words alone" in row
    assert "Yes" in row
    drafts = re.search(rf'<tr data-base="{quiet.pk}">.*?</tr>', page, re.S).group(0)
    assert "none yet" in drafts and "stale" in drafts and "No" in drafts


def test_creating_a_base_opens_it_and_errors_stay_next_to_their_fields(client, manager):
    page = client.get(LIST).content.decode()
    assert 'data-testid="new-base-form"' in page and 'data-testid="create-demo"' in page

    response = client.post(NEW, _settings_form())
    base = KnowledgeBase.objects.get(name="Manuals")
    assert response.status_code == 302
    assert response["Location"] == _page(base) + "#add"
    assert base.created_by == manager and base.in_chat and base.passages == 5
    assert base.min_similarity == 0.4 and base.min_match == 0.25
    assert base.nothing_found == NOTHING_FOUND_TEXT

    response = client.post(NEW, _settings_form(passages="11", min_match="1.5"))
    assert response.status_code == 400
    page = response.content.decode()
    assert "errorlist" in _field_html(page, "passages")
    assert "errorlist" in _field_html(page, "min_match")
    response = client.post(NEW, _settings_form())
    assert response.status_code == 400
    assert "already exists" in _field_html(response.content.decode(), "name")
    assert KnowledgeBase.objects.count() == 1


def test_the_demo_button_creates_the_help_center_and_builds_its_index(
    client, manager, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(DEMO)
    base = KnowledgeBase.objects.get(name=DEMO_KNOWLEDGE_NAME)
    assert response.status_code == 302 and response["Location"] == _page(base)
    assert base.in_chat and base.sources.filter(status="ready").count() >= 3
    assert queued["builds"] == [base.pk]
    assert KnowledgeIndex.objects.get(base=base).chunk_count > 0
    assert 'data-testid="open-demo"' in client.get(LIST).content.decode()
    # A second click imports the articles again; it makes no second base.
    response = client.post(DEMO, follow=True)
    assert KnowledgeBase.objects.filter(name=DEMO_KNOWLEDGE_NAME).count() == 1
    assert "imported again" in " ".join(_flashes(response))


# --- a base's settings ----------------------------------------------------------


def test_the_settings_are_saved_and_say_which_threshold_applies(client, manager, shop):
    page = client.get(_page(shop)).content.decode()
    assert "Applies now" in _field_html(page, "min_match")
    assert "Not used now" in _field_html(page, "min_similarity")

    data = _settings_form(name="Shop help", in_chat=None, nothing_found="Ask us by email.")
    response = client.post(_page(shop), data)
    assert response.status_code == 302
    shop.refresh_from_db()
    assert (shop.name, shop.in_chat, shop.passages) == ("Shop help", False, 5)
    assert shop.nothing_found == "Ask us by email."

    response = client.post(_page(shop), _settings_form(passages="0", name="Changed"))
    assert response.status_code == 400
    assert "errorlist" in _field_html(response.content.decode(), "passages")
    shop.refresh_from_db()
    assert shop.name == "Shop help"


def test_deleting_a_base_asks_first(client, manager, shop):
    site = widget_site_save(
        data={"name": "Shop", "allowed_origins": "https://shop.example", "knowledge_base": shop}
    )
    page = client.get(_url("delete", shop)).content.decode()
    assert "3 sources" in page and "widget site Shop" in page
    assert 'data-testid="confirm-delete"' in page
    response = client.post(_url("delete", shop))
    assert response.status_code == 302 and response["Location"] == LIST
    assert not KnowledgeBase.objects.exists() and not KnowledgeChunk.objects.exists()
    site.refresh_from_db()
    assert site.knowledge_base is None


def test_a_missing_base_or_a_source_of_another_base_is_not_found(client, manager, shop):
    other = knowledge_base_create(name="Other")
    source = shop.sources.first()
    assert client.get(reverse("dashboard:knowledge-base", args=[999999])).status_code == 404
    assert client.get(_url("source-delete", other, source.pk)).status_code == 404
    assert client.post(_url("source-delete", other, source.pk)).status_code == 404
    assert client.post(_url("source-fetch", other, source.pk)).status_code == 404
    assert KnowledgeSource.objects.filter(pk=source.pk).exists()


# --- sources ----------------------------------------------------------------------


def _upload(name, data, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def test_an_upload_imports_the_good_files_and_names_every_bad_one(
    client, manager, settings, queued, django_capture_on_commit_callbacks
):
    settings.KNOWLEDGE_MAX_FILE_BYTES = 2048
    base = knowledge_base_create(name="Shop")
    files = [
        _upload("returns.md", SHOP_DOCS["returns.md"], "text/markdown"),
        _upload("candles.html", SHOP_DOCS["candles.html"], "text/html"),
        _upload("gifts.pdf", pdf_bytes(["Gift cards last 24 months."], title="Gifts")),
        _upload("broken.pdf", b"%PDF-1.4 garbage", "application/pdf"),
        _upload("binary.txt", b"\x00\x01\x02binary\x00" * 50, "text/plain"),
        _upload("letter.docx", b"PK\x03\x04 not really a document"),
        _upload("huge.md", b"# Huge\n\n" + b"words " * 1000, "text/markdown"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("upload", base), {"documents": files}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == _page(base) + "#sources"

    imported = {s.filename: s for s in base.sources.all()}
    assert set(imported) == {"returns.md", "candles.html", "gifts.pdf"}
    assert all(s.status == "ready" and s.chunk_count > 0 for s in imported.values())
    assert imported["candles.html"].title == "Candle care"

    flashes = _flashes(response)
    assert any("Imported 3 files" in text for text in flashes)
    problems = {
        text.split("\u201d")[0].lstrip("\u201c"): text
        for text in flashes
        if "not imported" in text
    }
    assert set(problems) == {"broken.pdf", "binary.txt", "letter.docx", "huge.md"}
    assert "PDF could not be read" in problems["broken.pdf"]
    assert "binary data" in problems["binary.txt"]
    assert "\u201c.docx\u201d files cannot be read" in problems["letter.docx"]
    assert "the limit is 2 KB" in problems["huge.md"]
    page = _text(response)
    for name in problems:
        assert name in page
    assert queued["builds"] == [base.pk]
    index = KnowledgeIndex.objects.get(base=base)
    assert index.chunk_count == sum(s.chunk_count for s in imported.values())


def test_a_file_over_the_limit_is_refused_by_its_size_without_being_read(settings):
    settings.KNOWLEDGE_MAX_FILE_BYTES = 1024

    class Unreadable(SimpleUploadedFile):
        def read(self, *args, **kwargs):
            raise AssertionError("an oversize upload was read")

        def chunks(self, *args, **kwargs):
            raise AssertionError("an oversize upload was read")

    big = Unreadable("big.md", b"x" * 5000, content_type="text/markdown")
    small = SimpleUploadedFile("small.md", b"# Small\n\ntext", content_type="text/markdown")
    form = KnowledgeUploadForm(data={}, files=MultiValueDict({"documents": [big, small]}))
    assert form.is_valid(), form.errors
    assert form.cleaned_data["documents"] == [small]
    assert form.refused == [("big.md", "The file is 5 KB (5,000 bytes); the limit is 1 KB.")]


def test_uploading_a_file_of_the_same_name_replaces_it(client, manager, shop):
    source = shop.sources.get(filename="returns.md")
    new = b"# Returns\n\n## Return window\n\nItems can come back within 60 days.\n"
    client.post(_url("upload", shop), {"documents": [_upload("returns.md", new)]})
    source.refresh_from_db()
    assert source.version == 2 and shop.sources.count() == 3
    texts = " ".join(source.chunks.values_list("text", flat=True))
    assert "60 days" in texts and "30 days" not in texts


def test_an_upload_without_files_shows_the_error(client, manager, shop):
    response = client.post(_url("upload", shop), {})
    assert response.status_code == 400
    assert "errorlist" in _field_html(response.content.decode(), "documents")


def test_the_sources_table_links_pages_and_formats_sizes(client, viewer, shop):
    page_source = KnowledgeSource.objects.create(
        base=shop,
        kind="url",
        url="https://shop.example/help/faq?x=1&y=2",
        title="FAQ",
        status="failed",
        error="The server answered 404 Not Found.",
    )
    shop.sources.filter(filename="returns.md").update(size_bytes=14_200)
    page = client.get(_page(shop)).content.decode()
    row = re.search(rf'<tr data-source="{page_source.pk}".*?</tr>', page, re.S).group(0)
    assert (
        '<a href="https://shop.example/help/faq?x=1&amp;y=2" target="_blank" '
        'rel="noopener noreferrer">' in row
    )
    assert "Failed" in row and "404 Not Found" in row
    assert "14.2 KB" in page
    assert [size_text(n) for n in (512, 1500, 20_000_000)] == ["512 bytes", "1.5 KB", "20 MB"]


def test_web_addresses_are_queued_and_every_bad_line_is_named(client, manager, shop, queued):
    response = client.post(
        _url("urls", shop), {"urls": "https://shop.example/a\nnot a url\n\nftp://shop.example/b"}
    )
    assert response.status_code == 400
    field = html.unescape(_field_html(response.content.decode(), "urls"))
    assert (
        "Line 2: \u201cnot a url\u201d" in field
        and "Line 4: \u201cftp://shop.example/b\u201d" in field
    )
    assert "not a url" in response.content.decode()  # the text typed stays
    assert not shop.sources.filter(kind="url").exists()

    response = client.post(
        _url("urls", shop), {"urls": "https://shop.example/a\n https://shop.example/b \n"}
    )
    assert response.status_code == 302
    urls = shop.sources.filter(kind="url")
    assert sorted(urls.values_list("url", flat=True)) == [
        "https://shop.example/a",
        "https://shop.example/b",
    ]
    assert all(source.status == "queued" for source in urls)


def test_a_web_page_is_fetched_again_and_a_file_is_not(
    client, manager, shop, queued, django_capture_on_commit_callbacks
):
    page_source = KnowledgeSource.objects.create(
        base=shop, kind="url", url="https://shop.example/a", status="failed", error="timeout"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("source-fetch", shop, page_source.pk), follow=True)
    page_source.refresh_from_db()
    assert page_source.status == "queued" and page_source.error == ""
    assert queued["fetches"] == [page_source.pk]
    assert "fetched again" in " ".join(_flashes(response))

    file_source = shop.sources.get(filename="returns.md")
    response = client.post(_url("source-fetch", shop, file_source.pk), follow=True)
    assert "upload a file again" in " ".join(_flashes(response))
    assert queued["fetches"] == [page_source.pk]


def test_deleting_a_source_asks_first_and_rebuilds_the_index(
    client, manager, shop, queued, django_capture_on_commit_callbacks
):
    source = shop.sources.get(filename="shipping.md")
    page = client.get(_url("source-delete", shop, source.pk)).content.decode()
    assert "shipping.md" in page and 'data-testid="confirm-delete"' in page
    assert "csrfmiddlewaretoken" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("source-delete", shop, source.pk))
    assert response.status_code == 302
    assert not KnowledgeSource.objects.filter(pk=source.pk).exists()
    assert queued["builds"] == [shop.pk]
    assert KnowledgeIndex.objects.get(base=shop).version == 2


def test_rebuild_queues_the_build_of_a_stale_index(
    client, manager, queued, django_capture_on_commit_callbacks
):
    base = knowledge_base_create(name="Manuals")
    knowledge_file_add(base=base, filename="a.md", data=b"# A\n\nThe kettle boils.", queue=False)
    assert "stale" in client.get(_page(base)).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("rebuild", base))
    assert response.status_code == 302 and response["Location"].endswith("#index")
    assert queued["builds"] == [base.pk]
    page = client.get(_page(base)).content.decode()
    index = re.search(r'data-testid="index">.*?</section>', page, re.S).group(0)
    assert "v1" in index and "current" in index and "stale" not in index
    # A current index has nothing to build.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("rebuild", base), follow=True)
    assert queued["builds"] == [base.pk]
    assert "nothing to build" in " ".join(_flashes(response))


# --- the test box ---------------------------------------------------------------


def test_the_test_box_shows_the_passages_and_the_system_text(client, viewer, shop):
    KnowledgeSource.objects.filter(base=shop, filename="returns.md").update(
        kind="url", url="https://shop.example/returns", filename=""
    )
    response = client.get(_page(shop), {"q": "How long do refunds take to reach my card?"})
    assert response.status_code == 200
    test = response.context["test"]
    assert test["found"] and test["cards"][0]["title"] == "Returns"
    page = response.content.decode()
    result = re.search(r'data-testid="test-result">.*?</section>', page, re.S).group(0)
    assert "Found" in result and " ms</span>" in result and "ranked by words alone" in result
    first = re.search(r'<tr data-passage="1".*?</tr>', result, re.S).group(0)
    assert (
        '<a href="https://shop.example/returns" target="_blank" rel="noopener noreferrer">'
        "Returns</a>" in first
    )
    assert "Refund timing" in first and "5 working days" in first
    card = test["cards"][0]
    assert f"{card['score']:.3f}" in first and f"{card['match']:.3f}" in first
    system = html.unescape(re.search(r'data-testid="system-text">(.*?)</pre>', result, re.S)[1])
    assert system.endswith(INSTRUCTIONS.format(name="Help center"))
    assert system.startswith("[1] Returns") and "5 working days" in system
    assert 'data-testid="no-answer-note"' in result


def test_a_question_the_base_has_nothing_on_shows_the_reply_instead(client, viewer, shop):
    KnowledgeBase.objects.filter(pk=shop.pk).update(nothing_found="Sorry, ask a person.")
    response = client.get(_page(shop), {"q": "Do you sell garden furniture?"})
    page = response.content.decode()
    result = re.search(r'data-testid="test-result">.*?</section>', page, re.S).group(0)
    assert "Not found" in result and "Sorry, ask a person." in result
    assert 'data-testid="system-text"' not in result
    assert response.context["test"]["found"] is False


def test_the_test_box_says_when_there_is_no_index_yet(client, viewer):
    base = knowledge_base_create(name="Empty")
    page = client.get(_page(base), {"q": "anything"}).content.decode()
    assert "no index yet" in page and "Not found" in page


@pytest.mark.skipif(
    not (EMBEDDING_DIR / "model.safetensors").is_file(), reason="no embedding model set up"
)
def test_with_the_embedding_model_the_test_box_ranks_by_meaning(client, viewer, settings):
    settings.KNOWLEDGE_EMBEDDING_DIR = str(EMBEDDING_DIR)
    knowledge_cache_clear()
    base = _shop()
    response = client.get(_page(base), {"q": "my money back after sending something back"})
    test = response.context["test"]
    assert test["retrieval"].dense
    assert all(card["similarity"] is not None for card in test["cards"])
    page = response.content.decode()
    assert "ranked by meaning and words" in page and "by meaning and words" in page
    assert "Applies now" in _field_html(page, "min_similarity")
    assert "Not used now" in _field_html(page, "min_match")


# --- hit rate and gaps -------------------------------------------------------------


def _answer(conversation, question, *, base, found, cited=(), status="done", ago=None):
    asked = Message.objects.create(conversation=conversation, role="user", content=question)
    answer = Message.objects.create(
        conversation=conversation,
        parent=asked,
        role="assistant",
        status=status,
        content="…",
        finish_reason="stop" if found else "no_passages",
        knowledge={
            "base": base.pk,
            "name": base.name,
            "query": question,
            "found": found,
            "match": 0.61 if found else 0.12,
            "passages": [],
            "cited": list(cited),
        },
    )
    if ago is not None:
        Message.objects.filter(pk__in=[asked.pk, answer.pk]).update(
            created_at=timezone.now() - ago
        )
    return answer


@pytest.fixture
def traffic(shop):
    """Answers grounded in the shop: 4 in widget site A (3 found, 2 cited),
    2 in the chat (1 found and cited), 1 by the API (not found); and some
    that do not count (another base, too old, still pending)."""
    site = widget_site_save(data={"name": "Alpha shop", "allowed_origins": "https://a.example"})
    visitor = WidgetVisitor.objects.create(site=site, token=uuid.uuid4())
    widget = Conversation.objects.create(visitor=visitor, site=site, source="widget")
    member = UserFactory(username="member")
    chat = Conversation.objects.create(user=member, source="chat")
    api = Conversation.objects.create(user=member, source="api")
    other = knowledge_base_create(name="Other")
    _answer(widget, "Where is my parcel?", base=shop, found=True, cited=[1])
    _answer(widget, "Can I return a candle?", base=shop, found=True, cited=[1, 2])
    _answer(widget, "How big are the candles?", base=shop, found=True)
    _answer(widget, "Do you sell gift wrap?", base=shop, found=False)
    _answer(chat, "What does shipping cost?", base=shop, found=True, cited=[2])
    _answer(chat, "Do you have a shop in Leeds?", base=shop, found=False)
    _answer(api, "Is there a student discount?", base=shop, found=False)
    _answer(chat, "Other base question", base=other, found=False)
    _answer(chat, "An old question", base=shop, found=False, ago=timedelta(days=31))
    _answer(chat, "Still thinking", base=shop, found=False, status="pending")
    return {"site": site, "widget": widget, "chat": chat, "api": api}


def _cells(page: str, where: str) -> dict[str, str]:
    row = re.search(rf'<tr data-where="{where}">.*?</tr>', page, re.S).group(0)
    return {
        col: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", text)).strip()
        for col, text in re.findall(r'data-col="(\w+)">(.*?)</td>', row, re.S)
    }


def test_the_hit_rate_counts_questions_found_and_cited_per_site_and_the_chat(
    client, viewer, shop, traffic
):
    page = client.get(_page(shop)).content.decode()
    assert _cells(page, f"site-{traffic['site'].pk}") == {
        "questions": "4",
        "found": "75 % (3)",
        "cited": "50 % (2)",
    }
    assert _cells(page, "chat") == {"questions": "2", "found": "50 % (1)", "cited": "50 % (1)"}
    assert _cells(page, "api") == {"questions": "1", "found": "0 % (0)", "cited": "0 % (0)"}
    assert _cells(page, "all") == {"questions": "7", "found": "57 % (4)", "cited": "43 % (3)"}
    assert 'data-testid="gaps-link">Gaps (3)' in page


def test_the_gaps_list_the_questions_with_no_good_passage_newest_first(
    client, manager, shop, traffic
):
    response = client.get(_url("gaps", shop))
    gaps = response.context["gaps"]
    assert [gap["question"] for gap in gaps] == [
        "Is there a student discount?",
        "Do you have a shop in Leeds?",
        "Do you sell gift wrap?",
    ]
    assert [gap["surface"] for gap in gaps] == ["API", "Chat", "Alpha shop"]
    page = _text(response)
    assert "Do you sell gift wrap?" in page and "An old question" not in page
    assert "Other base question" not in page and "Still thinking" not in page
    # Reading users' questions is recorded, one view a conversation.
    events = ReviewEvent.objects.filter(staff=manager, action="view")
    assert {e.conversation_id for e in events} == {
        traffic["widget"].pk,
        traffic["chat"].pk,
        traffic["api"].pk,
    }
    assert all("knowledge gaps" in e.detail for e in events)


def test_the_gaps_show_at_most_fifty(client, manager, shop, traffic):
    for number in range(55):
        _answer(traffic["chat"], f"Question {number}", base=shop, found=False)
    gaps = client.get(_url("gaps", shop)).context["gaps"]
    assert len(gaps) == 50 and gaps[0]["question"] == "Question 54"


def test_staff_without_a_right_to_read_questions_see_only_the_count(client, viewer, shop, traffic):
    page = client.get(_url("gaps", shop)).content.decode()
    assert 'data-testid="gaps-hidden"' in page and "3 questions found nothing" in page
    assert "gift wrap" not in page
    assert not ReviewEvent.objects.exists()


# --- widget sites -------------------------------------------------------------------


def test_a_widget_site_saves_its_knowledge_base(client, shop):
    editor = UserFactory(username="site-editor", is_staff=True)
    grant(editor, "add_widgetsite", "change_widgetsite")
    client.force_login(editor)
    data = {
        "name": "Docs",
        "allowed_origins": "https://docs.example",
        "enabled": "on",
        "title": "Ask us",
        "color": "#112233",
        "position": "left",
        "timezone": "UTC",
        "messages_per_minute": "12",
        "knowledge_base": str(shop.pk),
    }
    response = client.post(reverse("dashboard:widget-site-new"), data)
    assert response.status_code == 302
    site = WidgetSite.objects.get(name="Docs")
    assert site.knowledge_base == shop

    page = client.get(reverse("dashboard:widget-site", args=[site.pk])).content.decode()
    assert f'<option value="{shop.pk}" selected>Help center</option>' in page
    knowledge = client.get(_page(shop)).content.decode()
    assert "Widget site" in knowledge and ">Docs</a>" in knowledge

    response = client.post(
        reverse("dashboard:widget-site", args=[site.pk]), {**data, "knowledge_base": ""}
    )
    assert response.status_code == 302
    site.refresh_from_db()
    assert site.knowledge_base is None
    response = client.post(
        reverse("dashboard:widget-site", args=[site.pk]), {**data, "knowledge_base": "999999"}
    )
    assert response.status_code == 400
    assert "errorlist" in _field_html(response.content.decode(), "knowledge_base")


# --- API keys -----------------------------------------------------------------------


def test_an_api_key_saves_its_knowledge_base_with_its_limits(client, shop):
    from chat.models import ApiKey
    from chat.services.api_keys import api_key_create

    staff = UserFactory(username="key-manager", is_staff=True)
    grant(staff, "change_apikey")
    client.force_login(staff)
    owner = UserFactory(username="carol")
    key, _secret = api_key_create(user=owner, name="carol app")
    page = client.get(reverse("dashboard:api-key-admin", args=[key.pk])).content.decode()
    assert "errorlist" not in _field_html(page, "knowledge_base")
    assert "none" in re.search(r'data-testid="key-knowledge">(.*?)</dd>', page).group(1)

    limits = reverse("dashboard:api-key-admin-limits", args=[key.pk])
    response = client.post(limits, {"rate_limit_per_minute": "5", "knowledge_base": shop.pk})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.knowledge_base == shop and key.rate_limit_per_minute == 5
    page = client.get(reverse("dashboard:api-key-admin", args=[key.pk])).content.decode()
    assert f'<option value="{shop.pk}" selected>Help center</option>' in page
    assert f'href="{_page(shop)}">Help center</a>' in page
    assert "carol app" in client.get(_page(shop)).content.decode()

    # The owner's next key starts with the limits, not the base.
    fresh, _secret = api_key_create(user=owner, name="second")
    assert fresh.rate_limit_per_minute == 5 and fresh.knowledge_base is None

    response = client.post(limits, {"rate_limit_per_minute": "5", "knowledge_base": "999999"})
    assert response.status_code == 400
    assert "errorlist" in _field_html(response.content.decode(), "knowledge_base")
    client.post(limits, {"rate_limit_per_minute": "5", "knowledge_base": ""})
    assert ApiKey.objects.get(pk=key.pk).knowledge_base is None


# --- asking the model from the test box ----------------------------------


def _ask(client, base, question):
    import json as _json

    return client.post(
        _url("ask", base), data=_json.dumps({"question": question}),
        content_type="application/json",
    )  # fmt: skip


def test_the_test_box_asks_the_production_model_with_the_grounded_prompt(
    manager, client, shop, redis_conn, tiny_model_dir, monkeypatch
):
    import json as _json

    from inference.connection import requests_stream_key
    from models_admin.services import model_version_create, model_version_promote

    model_version_promote(version=model_version_create(name="tiny", folder=tiny_model_dir))
    page = client.get(_page(shop), {"q": "How long does the large candle burn?"}).content.decode()
    assert 'data-testid="ask-model"' in page
    redis_conn.delete(requests_stream_key())
    monkeypatch.setattr("models_admin.dashboard.views.knowledge_ask.workers_live_count", lambda: 1)
    response = _ask(client, shop, "How long does the large candle burn?")
    assert response["Content-Type"] == "text/event-stream"
    response.close()
    [(_id, fields)] = redis_conn.xrange(requests_stream_key(), "-", "+")
    payload = _json.loads(fields["payload"])
    assert payload["citations"] >= 1 and payload["params"]["temperature"] == 0.0
    assert payload["messages"][0]["content"].startswith("[1] Candle care › Burn time")
    assert payload["messages"][-1] == {
        "role": "user",
        "content": "How long does the large candle burn?",
    }


def test_the_test_box_answers_with_the_base_s_reply_when_nothing_fits(
    manager, client, shop, tiny_model_dir
):
    from models_admin.services import model_version_create, model_version_promote

    model_version_promote(version=model_version_create(name="tiny", folder=tiny_model_dir))
    body = _ask(client, shop, "What is the capital of Peru?").json()
    assert body["found"] is False and body["reply"] == shop.nothing_found
    assert _ask(client, shop, "").status_code == 400
    assert _ask(client, shop, "x" * 3000).status_code == 400


def test_only_staff_ask_the_model(client, shop):
    client.force_login(UserFactory(username="member"))
    assert _ask(client, shop, "Anything?").status_code == 403
