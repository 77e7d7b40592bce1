"""Health and metrics endpoints of the web process.

``/healthz`` answers anyone. ``/readyz`` and ``/metrics`` name workers,
versions and errors, so they answer only a request bearing
``MONITORING_TOKEN`` (``Authorization: Bearer ...``) or one from
``MONITORING_ALLOWED_IPS`` (loopback by default).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chatsite.proxies import address_in
from chatsite.redis_url import redis_url_display
from inference.connection import redis_client, worker_heartbeat_pattern, worker_metrics_pattern
from inference.metrics import merged_exposition
from inference.selectors import worker_metrics_list
from inference.worker.heartbeat import WorkerState, heartbeats_read


def monitoring_allowed(request: HttpRequest) -> bool:
    """Whether request bears the monitoring token or comes from an allowed
    address (the client address resolved from trusted proxies)."""
    from django.conf import settings

    token = settings.MONITORING_TOKEN
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if (
        token
        and scheme.lower() == "bearer"
        and secrets.compare_digest(offered.strip().encode(), token.encode())
    ):
        return True
    return address_in(request.META.get("REMOTE_ADDR"), settings.MONITORING_ALLOWED_IPS)


def monitoring_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Answer 401 (naming the Bearer scheme) to requests that
    ``monitoring_allowed`` refuses, before the view runs."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not monitoring_allowed(request):
            response = JsonResponse(
                {"error": "Monitoring endpoints need the monitoring token."}, status=401
            )
            response["WWW-Authenticate"] = 'Bearer realm="monitoring"'
            return response
        return view(request, *args, **kwargs)

    return guarded


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up; it checks nothing else."""
    return JsonResponse({"status": "ok"})


def _database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except DatabaseError as exc:
        return {"ok": False, "error": str(exc)}


def _redis_and_workers_check() -> tuple[dict, dict]:
    from django.conf import settings

    client = redis_client()
    try:
        client.ping()
        beats = heartbeats_read(client, worker_heartbeat_pattern())
    except (redis.RedisError, OSError) as exc:
        redis_check = {
            "ok": False,
            "url": redis_url_display(settings.REDIS_URL),
            "error": str(exc),
        }
        return redis_check, {"ok": False, "error": "Redis is unreachable", "workers": []}
    now = time.time()
    workers = [
        {
            "id": beat.id,
            "state": beat.state,
            "error": beat.error or None,
            "model_version": beat.model_version,
            "model_version_id": beat.model_version_id,
            "device": beat.device,
            "heartbeat_age_s": round(now - (beat.at if beat.at is not None else now), 2),
        }
        for beat in beats
    ]
    ready = [w for w in workers if w["state"] == WorkerState.READY]
    inference_check: dict = {"ok": bool(ready), "workers": workers}
    if not ready:
        inference_check["error"] = (
            "no inference worker is running" if not workers else "no inference worker is ready"
        )
    return {"ok": True}, inference_check


def speech_checks() -> dict[str, dict]:
    """Dictation and server-side reading aloud: optional, so they are
    reported but never fail readiness."""
    from django.conf import settings

    from inference.speech.client import speech_status
    from inference.speech.synthesis import SynthesisError, synthesizer

    try:
        status = speech_status()
        recognition: dict = {
            "ok": status.available,
            "backend": status.backend or None,
            "model": status.model or None,
            "workers": len(status.workers),
        }
        if not status.available:
            recognition["error"] = status.reason
    except (redis.RedisError, OSError):
        recognition = {"ok": False, "error": "Redis is unreachable"}
    synthesis: dict = {"ok": False}
    if not settings.SPEECH_SYNTHESIS_ENABLED:
        synthesis["error"] = "turned off on this site (SPEECH_SYNTHESIS_ENABLED)"
    else:
        try:
            rate = synthesizer().sample_rate
            synthesis = {"ok": True, "engine": "espeak-ng", "sample_rate": rate}
        except SynthesisError as exc:
            synthesis["error"] = str(exc)
    return {
        "speech_recognition": {**recognition, "optional": True},
        "speech_synthesis": {**synthesis, "optional": True},
    }


@never_cache
@require_GET
@monitoring_only
def readyz(request: HttpRequest) -> JsonResponse:
    """Database, Redis and at least one ready inference worker; 503 if not.
    The speech checks are listed too but never fail it."""
    database = _database_check()
    redis_check, inference_check = _redis_and_workers_check()
    checks = {"database": database, "redis": redis_check, "inference": inference_check}
    ok = all(check["ok"] for check in checks.values())
    checks.update(speech_checks())
    return JsonResponse(
        {"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503
    )


@never_cache
@require_GET
@monitoring_only
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of every live inference worker."""
    from prometheus_client import CONTENT_TYPE_LATEST

    client = redis_client()
    try:
        snapshots = worker_metrics_list(client=client, pattern=worker_metrics_pattern())
    except (redis.RedisError, OSError):
        snapshots = []
    body = merged_exposition(snapshots, workers=len(snapshots))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
