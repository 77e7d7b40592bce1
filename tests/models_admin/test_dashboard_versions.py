"""The dashboard's model versions through HTTP: who may look and act,
promotion with a note, rollback, canaries, the compare page and its
"ask all" stream (against a real in-process inference worker)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient, Client
from django.urls import reverse

from chat import streams
from chat.models import Conversation, Feedback, Message
from inference.client import generation_events_sync
from inference.worker.versions import VersionSpec
from models_admin.dashboard.selectors.versions import MISSING
from models_admin.models import Canary, ModelVersion, Promotion
from models_admin.services.model_versions import canary_start, model_version_promote
from tests.factories import ModelVersionFactory, UserFactory

ASK = reverse("dashboard:compare-ask")


def _url(name: str, *args: object) -> str:
    return reverse(f"dashboard:{name}", args=args)


@pytest.fixture
def staff(db):
    return UserFactory(is_staff=True)


@pytest.fixture
def operator(db):
    """Staff who may promote, roll back and run canaries."""
    user = UserFactory(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="promote_modelversion"))
    return user


@pytest.fixture
def production(db):
    version = ModelVersionFactory(
        metrics={"eval_loss": 2.5, "perplexity": 12.18, "tokens_per_s": 40.0}
    )
    model_version_promote(version=version, note="first")
    version.refresh_from_db()
    return version


@pytest.fixture
def candidate(production):
    return ModelVersionFactory(
        parent=production,
        kind=ModelVersion.Kind.FINETUNE,
        step=200,
        metrics={
            "eval_loss": 2.1,
            "perplexity": 8.17,
            "tokens_per_s": 38.5,
            "parameters": 135_000_000,
            "size_bytes": 270_000_000,
        },
        answers=[{"prompt": "Where is my order?", "answer": "It ships <b>today</b>."}],
    )


def _post_json(client, body: object):
    return client.post(ASK, data=json.dumps(body), content_type="application/json")


# --- access ------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_log_in(client, production):
    for url in [
        _url("versions"),
        _url("version", production.pk),
        _url("compare"),
        _url("promotions"),
        _url("canary"),
        _url("version-promote", production.pk),
    ]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url
    assert _post_json(client, {}).status_code == 302


@pytest.mark.django_db
def test_users_who_are_not_staff_are_refused(client, production):
    client.force_login(UserFactory(is_staff=False))
    for url in [_url("versions"), _url("version", production.pk), _url("promotions")]:
        assert client.get(url).status_code == 403, url
    response = _post_json(client, {"versions": [production.pk], "question": "hi"})
    assert response.status_code == 403
    assert "staff" in response.json()["error"]


@pytest.mark.django_db
def test_staff_without_the_permission_cannot_act_and_see_no_buttons(
    client, staff, production, candidate
):
    model_version_promote(version=candidate, note="second")
    other = ModelVersionFactory()
    canary_start(version=other, percent=10)
    client.force_login(staff)
    refused = [
        client.get(_url("version-promote", other.pk)),
        client.post(_url("version-promote", other.pk), {"note": "go"}),
        client.post(_url("rollback")),
        client.post(_url("canary"), {"version": other.pk, "percent": 20}),
        client.post(_url("canary-stop")),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert "promote_modelversion" in refused[0].content.decode()
    assert ModelVersion.objects.get(state="production") == candidate
    assert Canary.objects.get(ended_at__isnull=True).percent == 10
    pages = "".join(
        client.get(url).content.decode()
        for url in [
            _url("versions"),
            _url("version", other.pk),
            _url("promotions"),
            _url("canary"),
        ]
    )
    for action in [
        _url("version-promote", other.pk),
        _url("rollback"),
        _url("canary-stop"),
        f'action="{_url("canary")}"',
    ]:
        assert action not in pages


# --- list and detail -----------------------------------------------------------


@pytest.mark.django_db
def test_the_list_shows_metrics_lineage_and_filters_by_state_and_kind(
    client, staff, production, candidate
):
    archived = ModelVersionFactory(state=ModelVersion.State.ARCHIVED, name="old-one")
    canary_start(version=candidate, percent=25)
    client.force_login(staff)
    page = client.get(_url("versions")).content.decode()
    assert "canary 25%" in page
    assert "257.5\xa0MB" in page  # 270,000,000 bytes
    assert "135M" in page
    assert "2.1000" in page and "8.17" in page and "38.5" in page
    assert f'href="{_url("version", production.pk)}">{production.name}</a>' in page

    def names(query: str) -> set[str]:
        response = client.get(_url("versions") + query)
        return {row["version"].name for row in response.context["rows"]}

    assert names("?state=canary") == {candidate.name}
    assert names("?state=production") == {production.name}
    assert names("?state=archived") == {archived.name}
    assert names("?state=candidate") == set()  # the canary has its own badge
    assert names("?kind=finetune") == {candidate.name}
    assert names("") == {production.name, candidate.name, archived.name}


@pytest.mark.django_db
def test_the_detail_page_shows_lineage_metrics_answers_and_history(
    client, operator, production, candidate
):
    grandchild = ModelVersionFactory(parent=candidate, kind=ModelVersion.Kind.DISTILL)
    candidate.metrics["eval_by_dataset"] = {"shop": {"eval_loss": 1.75, "perplexity": 5.75}}
    candidate.save()
    client.force_login(operator)
    page = client.get(_url("version", candidate.pk)).content.decode()
    assert page.index(production.name) < page.index(f"<strong>{candidate.name}</strong>")
    assert grandchild.name in page
    assert "shop" in page and "1.7500" in page
    assert "Where is my order?" in page
    assert "It ships &lt;b&gt;today&lt;/b&gt;." in page  # escaped, never markup
    assert _url("version-promote", candidate.pk) in page
    assert 'name="percent"' in page
    history = client.get(_url("version", production.pk)).content.decode()
    assert "first" in history  # the note of its promotion


# --- promotion and rollback -----------------------------------------------------


@pytest.mark.django_db
def test_the_confirm_page_compares_production_and_the_candidate(
    client, operator, production, candidate
):
    client.force_login(operator)
    response = client.get(_url("version-promote", candidate.pk))
    assert response.status_code == 200
    deltas = {row["label"]: row for row in response.context["deltas"]}
    assert deltas["Eval loss"]["verdict"] == "better"
    assert deltas["Eval loss"]["text"].startswith("-0.4")
    assert deltas["Tokens/s"]["verdict"] == "worse"
    assert production.name in response.content.decode()


@pytest.mark.django_db
def test_size_and_parameter_changes_read_in_units_people_use(client, operator, production):
    """A checkpoint three times its base reads "+1.0 GB (+200.0%)", not
    "+1.076e+09"."""
    production.metrics = {
        **production.metrics,
        "size_bytes": 540_000_000,
        "parameters": 134_515_008,
    }
    production.save(update_fields=["metrics"])
    grown = ModelVersionFactory(
        parent=production,
        metrics={"size_bytes": 1_620_000_000, "parameters": 134_515_008 + 1_500_000},
    )
    client.force_login(operator)
    deltas = {
        row["label"]: row
        for row in client.get(_url("version-promote", grown.pk)).context["deltas"]
    }
    assert deltas["Size"]["candidate"] == "1.5\xa0GB"
    assert deltas["Size"]["text"] == "+1.0\xa0GB (+200.0%)"
    assert deltas["Parameters"]["text"] == "+1.5M (+1.1%)"
    smaller = ModelVersionFactory(parent=production, metrics={"size_bytes": 270_000_000})
    deltas = {
        row["label"]: row
        for row in client.get(_url("version-promote", smaller.pk)).context["deltas"]
    }
    assert deltas["Size"]["text"] == "-257.5\xa0MB (-50.0%)"


@pytest.mark.django_db
def test_promoting_moves_production_and_records_the_note_and_the_user(
    client, operator, production, candidate
):
    client.force_login(operator)
    response = client.post(
        _url("version-promote", candidate.pk), {"note": "lower eval loss"}, follow=True
    )
    assert response.status_code == 200
    assert f"{candidate.name} is now in production." in response.content.decode()
    candidate.refresh_from_db()
    production.refresh_from_db()
    assert (candidate.state, production.state) == ("production", "archived")
    promotion = Promotion.objects.first()
    assert promotion.to_version == candidate
    assert promotion.from_version == production
    assert promotion.by == operator
    assert promotion.note == "lower eval loss"


@pytest.mark.django_db
def test_a_promotion_without_a_note_is_refused(client, operator, production, candidate):
    client.force_login(operator)
    response = client.post(_url("version-promote", candidate.pk), {"note": "  "})
    assert response.status_code == 400
    assert "Say why this version goes to production." in response.content.decode()
    assert ModelVersion.objects.get(state="production") == production
    assert Promotion.objects.count() == 1


@pytest.mark.django_db
def test_a_version_without_model_files_is_not_promoted_and_the_page_says_why(
    client, operator, production
):
    broken = ModelVersionFactory(folder="/nonexistent/model")
    client.force_login(operator)
    response = client.post(_url("version-promote", broken.pk), {"note": "try"})
    assert response.status_code == 400
    assert "has no model files" in response.content.decode()
    assert ModelVersion.objects.get(state="production") == production


@pytest.mark.django_db
def test_rollback_returns_to_the_previous_version_named_on_the_button(
    client, operator, production, candidate
):
    model_version_promote(version=candidate, by=operator, note="second")
    client.force_login(operator)
    page = client.get(_url("promotions")).content.decode()
    assert f"Roll back to {production.name}" in page
    response = client.post(_url("rollback"), {"note": "regression"}, follow=True)
    assert f"{production.name} is in production" in response.content.decode()
    assert ModelVersion.objects.get(state="production") == production
    latest = Promotion.objects.first()
    assert (latest.from_version, latest.to_version, latest.by) == (
        candidate,
        production,
        operator,
    )
    assert latest.note == "regression"


@pytest.mark.django_db
def test_rollback_with_nothing_before_says_so(client, operator, production):
    client.force_login(operator)
    response = client.post(_url("rollback"), follow=True)
    assert "no earlier production version" in response.content.decode()
    assert ModelVersion.objects.get(state="production") == production


@pytest.mark.django_db
def test_the_promotions_page_lists_promotions_and_canaries_newest_first(
    client, operator, production, candidate
):
    canary_start(version=candidate, percent=5, by=operator, note="try it")
    model_version_promote(version=candidate, by=operator, note="went well")
    client.force_login(operator)
    response = client.get(_url("promotions"))
    promotions = list(response.context["promotion_page"])
    assert [p.note for p in promotions] == ["went well", "first"]
    (canary,) = response.context["canary_page"]
    assert canary.outcome == "promoted"
    page = response.content.decode()
    assert "went well" in page and "Promoted" in page and "try it" in page


# --- canaries ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_canary_starts_changes_its_share_and_stops(client, operator, production, candidate):
    client.force_login(operator)
    response = client.post(
        _url("canary"), {"version": candidate.pk, "percent": 10, "note": "watch it"}, follow=True
    )
    assert f"Canary {candidate.name} answers 10% of conversations." in response.content.decode()
    canary = Canary.objects.get(ended_at__isnull=True)
    assert (canary.version, canary.percent, canary.started_by) == (candidate, 10, operator)

    client.post(_url("canary"), {"version": candidate.pk, "percent": 40})
    canary.refresh_from_db()
    assert canary.percent == 40 and canary.active
    assert Canary.objects.count() == 1

    response = client.post(_url("canary-stop"), follow=True)
    assert f"Canary {candidate.name} stopped." in response.content.decode()
    canary.refresh_from_db()
    assert (canary.outcome, canary.ended_by) == ("stopped", operator)
    assert ModelVersion.objects.get(state="production") == production


@pytest.mark.django_db
def test_a_canary_share_outside_1_to_99_or_of_production_is_refused(
    client, operator, production, candidate
):
    client.force_login(operator)
    for body in [
        {"version": candidate.pk, "percent": 0},
        {"version": candidate.pk, "percent": 100},
        {"version": production.pk, "percent": 10},
    ]:
        assert client.post(_url("canary"), body).status_code == 400
    assert not Canary.objects.exists()


@pytest.mark.django_db
def test_the_canary_panel_sets_production_and_canary_figures_side_by_side(
    client, operator, production, candidate
):
    canary_start(version=candidate, percent=50)
    user = UserFactory()
    conversation = Conversation.objects.create(user=user)
    for version, ttft, rating in [(production, 0.2, 1), (candidate, 0.5, -1)]:
        answer = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            content="ok",
            status=Message.Status.DONE,
            model_version=version,
            prompt_tokens=12,
            completion_tokens=11,
            timings={"ttft_s": ttft, "total_s": ttft + 1.0},
        )
        Feedback.objects.create(message=answer, user=user, rating=rating, model_version=version)
    client.force_login(operator)
    response = client.get(_url("canary"))
    stats = {row["label"]: row for row in response.context["panel"]["stats"]}
    assert stats["Answers"] == {"label": "Answers", "production": "1", "canary": "1"}
    assert stats["TTFT p50"]["production"] == "200 ms"
    assert stats["TTFT p50"]["canary"] == "500 ms"
    assert stats["Thumbs-up rate"]["production"].startswith("100.0%")
    assert stats["Thumbs-up rate"]["canary"].startswith("0.0%")
    assert stats["Tokens/s"]["production"] == "10.0"
    page = response.content.decode()
    assert "Promote canary" in page and _url("version-promote", candidate.pk) in page


# --- compare -------------------------------------------------------------------------


@pytest.mark.django_db
def test_comparing_fewer_than_2_or_more_than_4_versions_shows_an_error(client, staff):
    versions = [ModelVersionFactory() for _ in range(5)]
    client.force_login(staff)
    for chosen in [versions[:1], versions, []]:
        query = "&".join(f"v={v.pk}" for v in chosen)
        response = client.get(f"{_url('compare')}?{query}")
        assert response.status_code == 400
        assert "Choose 2 to 4 versions to compare" in response.content.decode()
    response = client.get(f"{_url('compare')}?v={versions[0].pk}&v=99999")
    assert "There is no model version 99999" in response.content.decode()


@pytest.mark.django_db
def test_compare_sets_metrics_and_answers_side_by_side_with_the_best_marked(
    client, staff, production, candidate
):
    third = ModelVersionFactory(
        metrics={"eval_loss": 2.3, "tokens_per_s": 55.0},
        answers=[
            {"prompt": "Opening hours?", "answer": "Nine to six."},
            {"prompt": "Where is my order?", "answer": "On its way."},
        ],
    )
    client.force_login(staff)
    response = client.get(f"{_url('compare')}?v={production.pk}&v={candidate.pk}&v={third.pk}")
    assert response.status_code == 200
    rows = {row["label"]: row["cells"] for row in response.context["metric_rows"]}
    assert [c["best"] for c in rows["Eval loss"]] == [False, True, False]
    assert [c["best"] for c in rows["Perplexity"]] == [False, True, False]
    assert [c["best"] for c in rows["Tokens/s"]] == [False, False, True]
    assert [c["display"] for c in rows["Perplexity"]] == ["12.18", "8.17", MISSING]
    answers = {row["prompt"]: row["cells"] for row in response.context["answer_rows"]}
    assert answers["Where is my order?"] == [None, "It ships <b>today</b>.", "On its way."]
    assert answers["Opening hours?"] == [None, None, "Nine to six."]
    page = response.content.decode()
    assert "No answer stored" in page
    assert 'class="num best"' in page
    assert 'id="compare-config"' in page


@pytest.mark.django_db
def test_ask_all_refuses_bad_input_with_json_errors(client, staff):
    one, two = ModelVersionFactory(), ModelVersionFactory()
    five = [one, two, *(ModelVersionFactory() for _ in range(3))]
    client.force_login(staff)
    good = {"versions": [one.pk, two.pk], "question": "Hello?", "max_tokens": 16}
    cases = {
        "versions": [
            {**good, "versions": [one.pk]},
            {**good, "versions": [v.pk for v in five]},
            {**good, "versions": [one.pk, 99999]},
            {**good, "versions": "nope"},
        ],
        "question": [{**good, "question": "   "}, {**good, "question": "x" * 4001}],
        "max_tokens": [{**good, "max_tokens": 0}, {**good, "max_tokens": 513}],
        "temperature": [{**good, "temperature": -1}],
    }
    for field, bodies in cases.items():
        for body in bodies:
            response = _post_json(client, body)
            assert response.status_code == 400, body
            assert response["Content-Type"] == "application/json"
            assert field in response.json()["errors"], body
    for raw in ["not json", "[1, 2]"]:
        response = client.post(ASK, data=raw, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"]
    assert client.get(ASK).status_code == 405


@pytest.mark.django_db
def test_ask_all_says_so_when_no_inference_worker_runs(client, staff):
    one, two = ModelVersionFactory(), ModelVersionFactory()
    client.force_login(staff)
    response = _post_json(client, {"versions": [one.pk, two.pk], "question": "Hello?"})
    assert response.status_code == 503
    assert "No inference worker" in response.json()["error"]


# --- "ask all" against a real worker ---------------------------------------------------


def _events(body: bytes) -> list[dict]:
    return [
        json.loads(block.removeprefix("data: "))
        for block in body.decode().split("\n\n")
        if block.startswith("data: ")
    ]


@pytest.fixture
def served_pair(start_worker, tiny_model_dir):
    """Two versions of the tiny model, one in production, and a worker
    that serves production and loads the other when asked for it."""
    first = ModelVersionFactory(name="tiny-a", folder=str(tiny_model_dir))
    second = ModelVersionFactory(name="tiny-b", folder=str(tiny_model_dir))
    model_version_promote(version=first)
    specs = {v.pk: VersionSpec(v.pk, v.name, tiny_model_dir) for v in (first, second)}
    start_worker(lambda: specs[first.pk], version_lookup=specs.get)
    return first, second


@pytest.mark.django_db(transaction=True)
def test_ask_all_streams_every_version_s_answer_and_ends(served_pair):
    first, second = served_pair
    client = AsyncClient()
    client.force_login(UserFactory(is_staff=True))

    async def ask() -> tuple[int, str, bytes]:
        response = await client.post(
            ASK,
            data={
                "versions": [first.pk, second.pk],
                "question": "Hello there",
                "system": "Be brief.",
                "max_tokens": 8,
            },
            content_type="application/json",
        )
        body = b"".join([chunk async for chunk in response.streaming_content])
        return response.status_code, response["Content-Type"], body

    status, content_type, body = async_to_sync(ask)()
    assert (status, content_type) == (200, "text/event-stream")
    events = _events(body)
    assert events[-1] == {"type": "end"}
    for version in (first, second):
        mine = [e for e in events if e.get("version") == version.pk]
        kinds = [e["type"] for e in mine]
        assert kinds[0] == "start" and kinds[-1] == "done", kinds
        assert "text" in kinds
        assert mine[0]["model_version"] == version.name  # answered by that version
        done = mine[-1]
        assert 1 <= done["completion_tokens"] <= 8
        assert done["ttft_s"] > 0
        assert "".join(e["text"] for e in mine if e["type"] == "text")
        # Each token comes with its probability and 5 alternatives, for the
        # page's token view.
        tokens = [t for e in mine if e["type"] == "text" for t in e.get("logprobs", [])]
        assert tokens and all(len(t["top_logprobs"]) == 5 for t in tokens)


@pytest.mark.django_db(transaction=True)
def test_a_browser_leaving_ask_all_cancels_the_generations(served_pair, monkeypatch, settings):
    """Through Django's ASGI handler, as a server runs it: the browser
    posts with the CSRF cookie and header, reads the first text, then goes
    away; every generation still running ends as cancelled."""
    first, second = served_pair
    cancelled: list[str] = []
    real_cancel = streams.generation_cancel

    def cancel(generation_id: str) -> None:
        cancelled.append(generation_id)
        real_cancel(generation_id)

    monkeypatch.setattr(streams, "generation_cancel", cancel)
    login = Client()
    login.force_login(UserFactory(is_staff=True))
    session = login.cookies[settings.SESSION_COOKIE_NAME].value
    csrf = "a" * 32
    body = json.dumps(
        {"versions": [first.pk, second.pk], "question": "Tell a story", "max_tokens": 512}
    ).encode()
    sent: list[dict] = []

    async def browse() -> None:
        gone = asyncio.Event()
        requested = False

        async def receive() -> dict:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)
            if b'"type":"text"' in message.get("body", b""):
                gone.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": ASK,
            "raw_path": ASK.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"content-type", b"application/json"),
                (b"x-csrftoken", csrf.encode()),
                (
                    b"cookie",
                    f"{settings.SESSION_COOKIE_NAME}={session}; csrftoken={csrf}".encode(),
                ),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await asyncio.wait_for(ASGIHandler()(scope, receive, send), timeout=60)

    async_to_sync(browse)()
    assert sent[0]["status"] == 200
    assert len(cancelled) == 2
    for generation_id in cancelled:
        final = list(generation_events_sync(generation_id, timeout_s=30))[-1]
        assert final.type == "done"
        assert final.data["finish_reason"] == "cancelled"


@pytest.mark.django_db
def test_a_speed_measured_during_training_is_marked_so(client, operator, production):
    loaded = ModelVersionFactory(
        parent=production, metrics={"tokens_per_s": 20.0, "speed_under_load": True}
    )
    client.force_login(operator)
    deltas = {
        row["label"]: row
        for row in client.get(_url("version-promote", loaded.pk)).context["deltas"]
    }
    assert deltas["Tokens/s"]["candidate"] == "20.0 (under load)"
    assert deltas["Tokens/s"]["production"] == "40.0"
