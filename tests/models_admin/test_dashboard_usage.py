"""The dashboard's usage page and overview: figures computed from known
answers (totals, per day in the site's time zone, per version, top
users), the live load read from Redis, and who may see them."""

from __future__ import annotations

import html
import json
import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, Feedback, Message, WidgetSite, WidgetVisitor
from chat.services.widget_sites import widget_site_save
from inference.connection import requests_stream_key, worker_heartbeat_key
from models_admin.dashboard.selectors import live as live_selectors
from models_admin.dashboard.selectors.figures import version_stats
from models_admin.dashboard.selectors.live import live_load
from models_admin.dashboard.selectors.usage import (
    MAX_WINDOW_DAYS,
    usage_by_day,
    usage_by_hour,
    usage_by_version,
    usage_summary,
    usage_top_users,
    usage_window,
)
from models_admin.models import Dataset, ModelVersion, TrainingJob
from models_admin.services.model_versions import canary_start, model_version_promote
from tests.conftest import free_port
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

# Paris is UTC+1 in January: 23:30 UTC on the 10th is the 11th there.
SITE_TZ = "Europe/Paris"
FIRST, LAST = date(2025, 1, 10), date(2025, 1, 13)
WINDOW_QUERY = {"period": "custom", "start": "2025-01-10", "end": "2025-01-13"}


def _utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, tzinfo=UTC)


def _conversation(user, source: str = Conversation.Source.CHAT) -> Conversation:
    return Conversation.objects.create(user=user, title="t", source=source)


def _answer(
    conversation: Conversation,
    *,
    at: datetime,
    version: ModelVersion | None,
    status: str = Message.Status.DONE,
    prompt: int | None = None,
    completion: int | None = None,
    timings: dict[str, float] | None = None,
) -> Message:
    """An answer (after its question) created at ``at``."""
    question = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content="q"
    )
    answer = Message.objects.create(
        conversation=conversation,
        parent=question,
        role=Message.Role.ASSISTANT,
        content="a",
        status=status,
        model_version=version,
        model_version_name=version.name if version else "",
        prompt_tokens=prompt,
        completion_tokens=completion,
        timings=timings or {},
    )
    # created_at is set on insert; move both turns to the day under test.
    Message.objects.filter(pk__in=[question.pk, answer.pk]).update(created_at=at)
    answer.refresh_from_db()
    return answer


@pytest.fixture
def site_tz(settings):
    settings.TIME_ZONE = SITE_TZ


@pytest.fixture
def traffic(site_tz) -> dict[str, Any]:
    """Five answers in the window 2025-01-10..13 (Paris), nothing on the
    12th, and answers just outside it that must not count."""
    prod = ModelVersionFactory(name="prod-a", state=ModelVersion.State.PRODUCTION)
    cand = ModelVersionFactory(name="cand-b")
    alice, bob, carol = (UserFactory(username=name) for name in ("alice", "bob", "carol"))
    alice_chat = _conversation(alice)
    alice_widget = _conversation(alice, Conversation.Source.WIDGET)
    bob_api = _conversation(bob, Conversation.Source.API)
    carol_chat = _conversation(carol)
    answers = {
        # 10th: speed (21 - 1) / (1.1 - 0.1) = 20 tokens/s.
        "a1": _answer(
            alice_chat,
            at=_utc(10, 9),
            version=prod,
            prompt=10,
            completion=21,
            timings={"ttft_s": 0.1, "total_s": 1.1},
        ),
        # 23:30 UTC on the 10th is 00:30 on the 11th in Paris. 10 tokens/s.
        "a2": _answer(
            alice_chat,
            at=_utc(10, 23, 30),
            version=prod,
            prompt=20,
            completion=11,
            timings={"ttft_s": 0.2, "total_s": 1.2},
        ),
        # 11th: an error, no completion, no timings.
        "a3": _answer(
            alice_widget,
            at=_utc(11, 12),
            version=cand,
            status=Message.Status.ERROR,
            prompt=30,
            completion=None,
        ),
        # 13th: 40 tokens/s, then a stopped answer at 10 tokens/s.
        "a4": _answer(
            bob_api,
            at=_utc(13, 8),
            version=cand,
            prompt=40,
            completion=41,
            timings={"ttft_s": 0.4, "total_s": 1.4},
        ),
        "a5": _answer(
            carol_chat,
            at=_utc(13, 10),
            version=prod,
            status=Message.Status.CANCELLED,
            prompt=5,
            completion=3,
            timings={"ttft_s": 0.3, "total_s": 0.5},
        ),
        # Outside: 23:30 UTC on the 13th is the 14th in Paris; 22:59 UTC on
        # the 9th is still the 9th; a pending answer is not finished.
        "late": _answer(
            alice_chat, at=_utc(13, 23, 30), version=prod, prompt=1000, completion=1000
        ),
        "early": _answer(bob_api, at=_utc(9, 22, 59), version=cand, prompt=1000, completion=1000),
        "pending": _answer(
            carol_chat, at=_utc(12, 12), version=prod, status=Message.Status.PENDING, prompt=7
        ),
    }
    Feedback.objects.create(message=answers["a1"], user=alice, rating=1)
    Feedback.objects.create(message=answers["a2"], user=alice, rating=-1)
    Feedback.objects.create(message=answers["a4"], user=bob, rating=1)
    Feedback.objects.create(message=answers["late"], user=alice, rating=-1)
    return {"prod": prod, "cand": cand, "users": (alice, bob, carol), "answers": answers}


@pytest.fixture
def window(site_tz):
    return usage_window(period="custom", first_day=FIRST, last_day=LAST)


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(username="operator", is_staff=True))
    return client


def _testid_text(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no element {testid}"
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


# --- windows ---------------------------------------------------------------


def test_a_custom_window_spans_whole_days_of_the_site_time_zone(window):
    assert window.start == datetime(2025, 1, 9, 23, 0, tzinfo=UTC)
    assert window.end == datetime(2025, 1, 13, 23, 0, tzinfo=UTC)
    assert window.days == (date(2025, 1, 10), date(2025, 1, 11), date(2025, 1, 12), LAST)


def test_the_default_window_is_the_last_seven_days_including_today(site_tz):
    now = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
    window = usage_window(now=now)
    assert window.period == "7d"
    assert window.days[0] == date(2025, 2, 27)
    assert window.days[-1] == date(2025, 3, 5)
    assert len(window.days) == 7
    assert window.end == now


def test_a_window_longer_than_the_limit_or_reversed_is_refused(site_tz):
    with pytest.raises(ValueError, match="at most"):
        usage_window(
            period="custom",
            first_day=FIRST,
            last_day=FIRST + timedelta(days=MAX_WINDOW_DAYS),
        )
    with pytest.raises(ValueError, match="before"):
        usage_window(period="custom", first_day=LAST, last_day=FIRST)


# --- figures -----------------------------------------------------------------


def test_totals_count_the_window_finished_answers_only(traffic, window):
    summary = usage_summary(window=window)
    assert summary["answers"] == 5
    assert summary["errors"] == 1
    assert summary["error_rate"] == pytest.approx(0.2)
    assert summary["prompt_tokens"] == 105
    assert summary["completion_tokens"] == 76
    assert summary["users"] == 3
    assert summary["conversations"] == 4
    # TTFTs 0.1, 0.2, 0.3, 0.4 (the error has none).
    assert summary["ttft_p50_s"] == pytest.approx(0.25)
    assert summary["ttft_p95_s"] == pytest.approx(0.385)
    # Speeds 20, 10, 40, 10 tokens/s.
    assert summary["tokens_per_s"] == pytest.approx(15.0)
    assert (summary["thumbs_up"], summary["thumbs_down"]) == (2, 1)
    assert summary["thumbs_up_rate"] == pytest.approx(2 / 3)


def test_filters_by_version_and_by_source_narrow_the_totals(traffic, window):
    by_candidate = usage_summary(window=window, version_id=traffic["cand"].pk)
    assert (by_candidate["answers"], by_candidate["errors"]) == (2, 1)
    assert by_candidate["prompt_tokens"] == 70
    widget = usage_summary(window=window, source=Conversation.Source.WIDGET)
    assert (widget["answers"], widget["prompt_tokens"], widget["users"]) == (1, 30, 1)
    api_days = usage_by_day(window=window, source=Conversation.Source.API)
    assert [row["answers"] for row in api_days] == [0, 0, 0, 1]


def test_days_follow_the_site_time_zone_and_quiet_days_are_zeros(traffic, window):
    days = usage_by_day(window=window)
    assert [row["day"] for row in days] == list(window.days)
    tenth, eleventh, twelfth, thirteenth = days
    assert (tenth["answers"], tenth["prompt_tokens"], tenth["completion_tokens"]) == (1, 10, 21)
    assert tenth["tokens_per_s"] == pytest.approx(20.0)
    assert tenth["thumbs_up_rate"] == 1.0
    assert tenth["by_version"] == {"prod-a": 1}
    # a2 (23:30 UTC on the 10th) is counted on the 11th.
    assert (eleventh["answers"], eleventh["errors"]) == (2, 1)
    assert eleventh["error_rate"] == pytest.approx(0.5)
    assert (eleventh["prompt_tokens"], eleventh["completion_tokens"]) == (50, 11)
    assert eleventh["ttft_p50_s"] == pytest.approx(0.2)
    assert eleventh["thumbs_up_rate"] == 0.0
    assert eleventh["by_version"] == {"cand-b": 1, "prod-a": 1}
    assert twelfth == {
        "day": date(2025, 1, 12),
        "by_version": {},
        "answers": 0,
        "errors": 0,
        "error_rate": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "thumbs_up": 0,
        "thumbs_down": 0,
        "thumbs_up_rate": None,
        "ttft_p50_s": None,
        "ttft_p95_s": None,
        "tokens_per_s": None,
    }
    assert (thirteenth["answers"], thirteenth["prompt_tokens"]) == (2, 45)
    assert thirteenth["ttft_p50_s"] == pytest.approx(0.35)
    assert thirteenth["ttft_p95_s"] == pytest.approx(0.395)
    assert thirteenth["tokens_per_s"] == pytest.approx(25.0)


def test_per_version_figures_list_the_busiest_version_first(traffic, window):
    rows = usage_by_version(window=window)
    assert [row["name"] for row in rows] == ["prod-a", "cand-b"]
    prod, cand = rows
    assert (prod["answers"], prod["errors"], prod["prompt_tokens"]) == (3, 0, 35)
    assert prod["state"] == "production"
    assert prod["ttft_p50_s"] == pytest.approx(0.2)
    assert prod["tokens_per_s"] == pytest.approx(10.0)
    assert prod["thumbs_up_rate"] == pytest.approx(0.5)
    assert (cand["answers"], cand["errors"], cand["completion_tokens"]) == (2, 1, 41)
    assert cand["error_rate"] == pytest.approx(0.5)


def test_version_stats_can_be_bounded_on_both_sides_and_by_source(traffic, window):
    prod, cand = traffic["prod"], traffic["cand"]
    since_only = version_stats(version_ids=[prod.pk], since=window.start)
    assert since_only[prod.pk]["answers"] == 4  # the late answer counts
    bounded = version_stats(
        version_ids=[prod.pk, cand.pk], since=window.start, until=window.end, source="chat"
    )
    assert bounded[prod.pk]["answers"] == 3
    assert bounded[cand.pk]["answers"] == 0
    assert bounded[cand.pk]["error_rate"] is None


def test_top_users_are_ordered_by_requests_then_tokens(traffic, window):
    rows = usage_top_users(window=window)
    assert [row["username"] for row in rows] == ["alice", "bob", "carol"]
    alice = rows[0]
    assert (alice["requests"], alice["prompt_tokens"], alice["completion_tokens"]) == (3, 60, 32)
    assert alice["conversations"] == 2
    assert alice["last_active"] == _utc(11, 12)
    assert [row["tokens"] for row in rows] == [92, 81, 8]
    assert len(usage_top_users(window=window, limit=2)) == 2


def test_answers_per_hour_cover_the_last_day_with_zero_hours(site_tz):
    version = ModelVersionFactory()
    conversation = _conversation(UserFactory())
    now = datetime(2025, 1, 20, 12, 30, tzinfo=UTC)  # 13:30 in Paris
    _answer(conversation, at=now - timedelta(minutes=20), version=version, prompt=3, completion=4)
    _answer(conversation, at=now - timedelta(hours=2), version=version, prompt=1, completion=1)
    _answer(conversation, at=now - timedelta(hours=30), version=version, prompt=9, completion=9)
    hours = usage_by_hour(now=now)
    assert len(hours) == 24
    assert timezone.localtime(hours[-1]["hour"]).hour == 13
    assert hours[-1]["hour"] == datetime(2025, 1, 20, 12, 0, tzinfo=UTC)
    assert (hours[-1]["answers"], hours[-1]["tokens"]) == (1, 7)
    assert hours[-3]["answers"] == 1
    assert sum(h["answers"] for h in hours) == 2


# --- live load ------------------------------------------------------------------


def _heartbeat(worker_id: str, **fields: Any) -> dict[str, Any]:
    now = time.time()
    beat = {
        "id": worker_id,
        "host": "gpu-host-1",
        "pid": 4242,
        "state": "ready",
        "error": "",
        "model_version_id": 1,
        "model_version": "prod-a",
        "loaded_versions": ["cand-b", "prod-a"],
        "loading_versions": ["next-c"],
        "device": "cuda:0",
        "dtype": "bfloat16",
        "capacity": 8,
        "running": 3,
        "queued": 2,
        "started_at": now - 3600,
        "at": now - 4,
    }
    beat.update(fields)
    return beat


@pytest.fixture
def worker_beat(redis_conn):
    written: list[str] = []

    def write(worker_id: str, **fields: Any) -> dict[str, Any]:
        beat = _heartbeat(worker_id, **fields)
        key = worker_heartbeat_key(worker_id)
        redis_conn.set(key, json.dumps(beat), ex=60)
        written.append(key)
        return beat

    yield write
    for key in written:
        redis_conn.delete(key)


def test_live_load_reads_heartbeats_queue_and_pending_answers(redis_conn, worker_beat):
    worker_beat("w-1")
    worker_beat("w-0", state="loading", running=1, queued=0, capacity=4, loaded_versions=[])
    for n in range(3):
        redis_conn.xadd(requests_stream_key(), {"n": str(n)})
    conversation = _conversation(UserFactory())
    Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING
    )
    abandoned = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING
    )
    Message.objects.filter(pk=abandoned.pk).update(created_at=timezone.now() - timedelta(days=2))

    live = live_load()

    assert live["redis_ok"] is True
    assert live["queue_length"] == 3
    assert live["pending_answers"] == 1
    assert [w["id"] for w in live["workers"]] == ["w-0", "w-1"]
    assert (live["workers_ready"], live["workers_total"]) == (1, 2)
    assert (live["running"], live["queued"], live["capacity"]) == (4, 2, 12)
    assert live["loaded_versions"] == ["cand-b", "prod-a"]
    worker = live["workers"][1]
    assert worker["loading_versions"] == ["next-c"]
    assert (worker["device"], worker["dtype"], worker["host"]) == (
        "cuda:0",
        "bfloat16",
        "gpu-host-1",
    )
    assert worker["heartbeat_age_s"] == pytest.approx(4, abs=1)
    assert worker["uptime_s"] == pytest.approx(3600, abs=2)


def _unreachable_redis() -> redis.Redis:
    """A client of a port nobody listens on, built as the site builds its own."""
    return redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)


def test_live_load_says_redis_is_unavailable_instead_of_failing():
    live = live_load(client=_unreachable_redis())
    assert live["redis_ok"] is False
    assert live["redis_error"]
    assert live["queue_length"] is None
    assert live["workers"] == []


# --- pages ---------------------------------------------------------------------------


def test_usage_page_shows_the_window_figures(traffic, staff_client):
    response = staff_client.get(reverse("dashboard:usage"), WINDOW_QUERY)
    assert response.status_code == 200
    page = response.content.decode()
    assert _testid_text(page, "total-requests") == "5"
    assert _testid_text(page, "total-tokens-in") == "105"
    assert _testid_text(page, "total-tokens-out") == "76"
    assert _testid_text(page, "total-errors") == "1"
    assert _testid_text(page, "total-error-rate") == "20.0 %"
    assert _testid_text(page, "total-ttft-p50") == "0.25 s"
    assert _testid_text(page, "total-speed") == "15.0"
    assert _testid_text(page, "total-thumbs-up") == "66.7 %"
    quiet_day = re.search(r'<tr data-day="2025-01-12">(.*?)</tr>', page, re.S)
    assert quiet_day, "the quiet day has a row"
    cells = re.findall(r'<td class="num">([^<]*)</td>', quiet_day.group(1))
    assert cells[:4] == ["0", "0", "0", "0"]
    users = re.findall(r'<tr data-user="\d+">\s*<td>(\w+)</td>', page)
    assert users == ["alice", "bob", "carol"]
    assert f'data-version="{traffic["prod"].pk}"' in page
    assert 'id="usage-initial"' in page


def test_usage_data_json_carries_the_same_figures(traffic, staff_client):
    response = staff_client.get(reverse("dashboard:usage-data"), WINDOW_QUERY)
    assert response.status_code == 200
    data = response.json()
    assert data["window"]["first_day"] == "2025-01-10"
    assert data["window"]["last_day"] == "2025-01-13"
    assert data["summary"]["answers"] == 5
    assert data["summary"]["ttft_p95_s"] == pytest.approx(0.385)
    assert [row["answers"] for row in data["days"]] == [1, 2, 0, 2]
    assert [row["name"] for row in data["versions"]] == ["prod-a", "cand-b"]
    assert [row["username"] for row in data["top_users"]] == ["alice", "bob", "carol"]
    assert data["live"]["redis_ok"] is True
    filtered = staff_client.get(
        reverse("dashboard:usage-data"), {**WINDOW_QUERY, "source": "api"}
    ).json()
    assert filtered["summary"]["answers"] == 1
    assert filtered["filters"] == {"version": None, "source": "api"}
    candidate = traffic["cand"].pk
    by_version = staff_client.get(
        reverse("dashboard:usage-data"), {**WINDOW_QUERY, "version": candidate}
    ).json()
    assert by_version["summary"]["answers"] == 2
    assert [row["name"] for row in by_version["versions"]] == ["cand-b"]


def test_a_wrong_window_shows_errors_and_the_json_refuses_it(site_tz, staff_client):
    query = {"period": "custom", "start": "2025-01-13", "end": "2025-01-10"}
    page = staff_client.get(reverse("dashboard:usage"), query)
    assert page.status_code == 200
    assert "The last day is before the first day." in page.content.decode()
    data = staff_client.get(reverse("dashboard:usage-data"), query)
    assert data.status_code == 400
    assert "errors" in data.json()


def test_usage_page_shows_worker_health_and_queue(redis_conn, worker_beat, staff_client):
    worker_beat("w-gpu")
    redis_conn.xadd(requests_stream_key(), {"n": "1"})
    redis_conn.xadd(requests_stream_key(), {"n": "2"})
    page = staff_client.get(reverse("dashboard:usage")).content.decode()
    row = re.search(r'<tr data-worker="w-gpu">(.*?)</tr>', page, re.S)
    assert row, "the worker has a row"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1)))
    assert "gpu-host-1" in text
    assert "ready" in text
    assert "cand-b, prod-a" in text
    assert "next-c" in text
    assert "cuda:0 · bfloat16" in text
    assert re.search(r"\b8 3 2 4\.\d s\b", text), text
    assert _testid_text(page, "live-queue") == "2"
    assert _testid_text(page, "live-running") == "3"
    assert "No inference worker is running." not in page


def test_usage_page_says_when_no_worker_runs(staff_client):
    page = staff_client.get(reverse("dashboard:usage")).content.decode()
    assert "No inference worker is running." in page
    assert _testid_text(page, "live-queue") == "0"


def test_usage_page_marks_redis_unavailable(staff_client, monkeypatch):
    monkeypatch.setattr(live_selectors, "redis_client", _unreachable_redis)
    response = staff_client.get(reverse("dashboard:usage"))
    assert response.status_code == 200
    page = response.content.decode()
    assert _testid_text(page, "live-queue") == "unavailable"
    assert "Redis is unavailable" in page
    assert staff_client.get(reverse("dashboard:usage-data")).json()["live"]["redis_ok"] is False


@pytest.mark.parametrize("route", ["dashboard:home", "dashboard:usage", "dashboard:usage-data"])
def test_only_staff_see_the_figures(client, route):
    url = reverse(route)
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))
    client.force_login(UserFactory(is_staff=False))
    assert client.get(url).status_code == 403


# --- overview ---------------------------------------------------------------------------


def test_overview_shows_production_canary_workers_today_jobs_and_promotions(
    staff_client, worker_beat
):
    operator = UserFactory(username="olga", is_staff=True)
    old, prod = ModelVersionFactory(name="old-v"), ModelVersionFactory(name="prod-v")
    model_version_promote(version=old)
    model_version_promote(version=prod, by=operator, note="lower eval loss")
    cand = ModelVersionFactory(name="cand-v")
    canary_start(version=cand, percent=10, by=operator)
    conversation = _conversation(UserFactory())
    for version, status, ttft in ((prod, "done", 0.2), (prod, "done", 0.4), (cand, "error", None)):
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=status,
            model_version=version,
            model_version_name=version.name,
            prompt_tokens=10,
            completion_tokens=5,
            timings={"ttft_s": ttft, "total_s": 1.0} if ttft else {},
        )
    worker_beat("w-1")
    worker_beat("w-2", state="loading", loaded_versions=[])
    dataset = Dataset.objects.create(name="shop", source=Dataset.Source.DEMO)
    job = TrainingJob.objects.create(
        kind=TrainingJob.Kind.FINETUNE,
        state=TrainingJob.State.RUNNING,
        dataset=dataset,
        base_version=prod,
        progress={"step": 5, "total_steps": 20},
    )

    response = staff_client.get(reverse("dashboard:home"))

    assert response.status_code == 200
    page = response.content.decode()
    production = _section(page, "overview-production")
    assert "prod-v" in production
    assert "olga" in production
    assert "old-v" in production
    canary = _section(page, "overview-canary")
    assert "cand-v" in canary
    assert "10%" in canary
    assert _testid_text(page, "canary-error-rate") == "100.0 %"
    assert _testid_text(page, "workers-ready") == "1"
    assert _testid_text(page, "workers-total") == "2"
    assert _testid_text(page, "workers-loaded") == "cand-b, prod-a"
    assert _testid_text(page, "today-requests") == "3"
    assert _testid_text(page, "today-tokens-in") == "30"
    assert _testid_text(page, "today-errors") == "1"
    assert _testid_text(page, "today-ttft-p50") == "0.30 s"
    jobs = _section(page, "overview-jobs")
    assert reverse("dashboard:job", args=[job.pk]) in jobs
    assert "25 %" in jobs
    promotions = _section(page, "overview-promotions")
    assert promotions.index("prod-v") < promotions.index("lower eval loss")
    assert reverse("dashboard:promotions") in promotions

    data = staff_client.get(reverse("dashboard:home-data")).json()
    assert data["today"]["answers"] == 3
    assert sum(hour["answers"] for hour in data["hours"]) == 3
    assert data["comparison"]["production"]["answers"] == 2
    assert data["comparison"]["canary"]["errors"] == 1
    assert data["jobs"]["active"][0]["percent"] == 25.0
    assert data["jobs"]["active"][0]["url"] == reverse("dashboard:job", args=[job.pk])
    assert data["live"]["workers_total"] == 2


def test_overview_without_production_canary_or_workers_says_so(staff_client):
    page = staff_client.get(reverse("dashboard:home")).content.decode()
    assert "No version is in production" in page
    assert "No canary is running." in page
    assert "No inference worker is running" in page
    assert "No training job yet." in page
    assert "No promotion yet." in page


def _section(page: str, testid: str) -> str:
    match = re.search(rf'<section[^>]*data-testid="{testid}"[^>]*>(.*?)</section>', page, re.S)
    assert match, f"no section {testid}"
    return match.group(1)


# --- answers without a user or without a model version --------------------------


def _visitor_conversation(site: WidgetSite) -> Conversation:
    """A widget visitor's conversation: no user, as the widget makes it."""
    visitor = WidgetVisitor.objects.create(site=site, token=uuid.uuid4())
    return Conversation.objects.create(
        site=site, visitor=visitor, source=Conversation.Source.WIDGET
    )


def _top_users_table(page: str) -> str:
    match = re.search(r'data-testid="usage-top-users">(.*?)</table>', page, re.S)
    assert match, "no top-users table"
    return match.group(1)


def test_widget_visitors_are_counted_together_per_site_never_as_a_user_named_none(
    site_tz, window, staff_client
):
    """Answers without a user are widget visitors': one row per site,
    labelled with the site's name and how many visitors it holds."""
    version = ModelVersionFactory(name="prod-a")
    shop = widget_site_save(
        data={"name": "Fernhollow shop", "allowed_origins": "https://shop.example"}
    )
    first, second = _visitor_conversation(shop), _visitor_conversation(shop)
    for conversation in (first, first, second):
        _answer(conversation, at=_utc(11, 9), version=version, prompt=5, completion=5)
    dora = _conversation(UserFactory(username="dora"))
    _answer(dora, at=_utc(11, 10), version=version, prompt=1, completion=1)

    rows = usage_top_users(window=window)
    assert [row["label"] for row in rows] == ["Widget visitors (Fernhollow shop)", "dora"]
    visitors, user = rows
    assert (visitors["kind"], visitors["site_id"], visitors["visitors"]) == (
        "visitors",
        shop.pk,
        2,
    )
    assert (visitors["requests"], visitors["conversations"], visitors["tokens"]) == (3, 2, 30)
    assert (visitors["user_id"], visitors["username"]) == (None, None)
    assert (user["kind"], user["username"], user["site_id"]) == ("user", "dora", None)

    page = staff_client.get(reverse("dashboard:usage"), WINDOW_QUERY).content.decode()
    table = _top_users_table(page)
    assert f'<tr data-site="{shop.pk}">' in table
    assert "Widget visitors (Fernhollow shop)" in table
    assert "2 visitors without an account" in table
    assert "None" not in table
    data = staff_client.get(reverse("dashboard:usage-data"), WINDOW_QUERY).json()
    assert [row["label"] for row in data["top_users"]] == [
        "Widget visitors (Fernhollow shop)",
        "dora",
    ]


def test_the_top_list_ranks_visitors_and_users_together_within_its_limit(site_tz, window):
    version = ModelVersionFactory(name="prod-a")
    shop = widget_site_save(data={"name": "Shop", "allowed_origins": "https://shop.example"})
    _answer(_visitor_conversation(shop), at=_utc(11, 9), version=version, prompt=2)
    eve = _conversation(UserFactory(username="eve"))
    for _ in range(2):
        _answer(eve, at=_utc(11, 9), version=version, prompt=1)
    _answer(_conversation(UserFactory(username="finn")), at=_utc(11, 9), version=version)
    assert [row["label"] for row in usage_top_users(window=window, limit=2)] == [
        "eve",
        "Widget visitors (Shop)",
    ]


def test_answers_no_model_wrote_are_labelled_by_why_never_unknown(site_tz, window, staff_client):
    """A blocked question's notice, a staff member's handoff reply and an
    answer sent while nothing was in production have no version; each
    says so. A deleted version keeps its name."""
    version = ModelVersionFactory(name="prod-a")
    retired = ModelVersionFactory(name="retired-c")
    chat = _conversation(UserFactory(username="erin"))
    _answer(chat, at=_utc(11, 9), version=version)
    _answer(chat, at=_utc(11, 9), version=retired)
    _answer(chat, at=_utc(11, 9), version=None, status=Message.Status.BLOCKED)
    _answer(chat, at=_utc(11, 9), version=None, status=Message.Status.ERROR)
    _answer(chat, at=_utc(11, 9), version=None, status=Message.Status.CANCELLED)
    shop = widget_site_save(data={"name": "Shop", "allowed_origins": "https://shop.example"})
    handled = _answer(_visitor_conversation(shop), at=_utc(11, 9), version=None)
    Message.objects.filter(pk=handled.pk).update(author=UserFactory(is_staff=True))
    retired.delete()

    eleventh = usage_by_day(window=window)[1]
    assert eleventh["answers"] == 6
    assert eleventh["by_version"] == {
        "No model (blocked by a filter)": 1,
        "No model (none was in production)": 2,
        "No model (written by staff)": 1,
        "prod-a": 1,
        "retired-c": 1,
    }
    data = staff_client.get(reverse("dashboard:usage-data"), WINDOW_QUERY).json()
    labels = {label for day in data["days"] for label in day["by_version"]}
    assert "unknown" not in labels
    assert "No model (written by staff)" in labels


def test_anonymised_conversations_are_one_row_never_widget_visitors(site_tz, window, staff_client):
    """Retention cut these from their people: counted together, labelled
    for what they are."""
    version = ModelVersionFactory(name="prod-a")
    conversation = _conversation(UserFactory(username="gone"))
    _answer(conversation, at=_utc(11, 9), version=version, prompt=2, completion=2)
    Conversation.objects.filter(pk=conversation.pk).update(user=None, anonymised_at=_utc(11, 10))
    [row] = usage_top_users(window=window)
    assert (row["kind"], row["label"], row["user_id"]) == (
        "anonymised",
        "Anonymised conversations",
        None,
    )
    table = _top_users_table(
        staff_client.get(reverse("dashboard:usage"), WINDOW_QUERY).content.decode()
    )
    assert "<tr data-anonymised>" in table and "None" not in table
