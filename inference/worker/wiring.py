"""The inference worker wired to the apps, as ``run_inference_worker``
runs it: the model versions in service come from the registry, output
filter rules from the filter rules, and finished generations and requests
lost with Redis go to the chat's services.

The only module of ``inference`` that imports ``chat`` or
``models_admin``; the worker itself knows nothing of Django.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from chat.services.completions import completion_usage_store
from chat.services.messages import generations_end_lost, message_generation_finish
from inference.citations import CitationFilter
from inference.connection import redis_client, worker_keys
from inference.engine_types import OutputFilter
from inference.worker.loop import InferenceWorker
from inference.worker.versions import VersionSpec
from models_admin.filters import content_filter_output, filter_hits_record
from models_admin.models import ModelVersion
from models_admin.selectors import model_version_get_production, model_versions_serving

logger = logging.getLogger(__name__)

# A worker is one long-lived process outside any request cycle: each
# callback drops a database connection that has gone stale or outlived
# CONN_MAX_AGE before it queries, as Django does when a request starts.


def _spec(version: ModelVersion | None) -> VersionSpec | None:
    if version is None:
        return None
    return VersionSpec(id=version.pk, name=version.name, path=version.path)


def production_version_get() -> VersionSpec | None:
    close_old_connections()
    return _spec(model_version_get_production())


def extra_versions_list() -> list[VersionSpec]:
    """The versions in service besides production (a canary)."""
    close_old_connections()
    return [
        spec
        for version in model_versions_serving()
        if version.state != ModelVersion.State.PRODUCTION and (spec := _spec(version))
    ]


def version_get(version_id: int) -> VersionSpec | None:
    close_old_connections()
    return _spec(ModelVersion.objects.filter(pk=version_id).first())


def output_filter(payload: dict[str, Any]) -> OutputFilter | None:
    """The output filter of one request: the output rules in force for its
    surface and widget site (compiled once per rules' epoch)."""
    close_old_connections()
    rules = content_filter_output(payload)
    citations = payload.get("citations")
    if isinstance(citations, int) and not isinstance(citations, bool) and citations > 0:
        # An answer from numbered passages cites only those numbers.
        return CitationFilter(citations, rules)
    return rules


def generation_store(generation_id: str, final: dict[str, Any], text: str) -> None:
    # Chat answers are stored by the chat app; a generation it does not know
    # (a command-line ``ask``, a benchmark) is left alone but its filter
    # hits are still kept.
    close_old_connections()
    answer = message_generation_finish(generation_id=generation_id, final=final, text=text)
    # An API call's tokens count even when its caller closed the stream.
    completion_usage_store(generation_id=generation_id, final=final)
    hits = final.get("filter_hits")
    if hits and answer is None:
        filter_hits_record(hits=hits, scope="output", generation_id=generation_id)


def requests_lost_end(waiting: list[str]) -> None:
    """End the answers whose request Redis lost in a restart; waiting
    names the generations still queued or running."""
    # Answers created since the restart have their request queued or
    # running; older ones that have neither were lost with Redis.
    close_old_connections()
    before = timezone.now() - timedelta(seconds=10)
    generations_end_lost(waiting=set(waiting), before=before)


def worker_build() -> InferenceWorker:
    """A worker configured from the settings, wired to the apps."""
    return InferenceWorker(
        redis_client=redis_client(),
        keys=worker_keys(),
        production_version=production_version_get,
        version_lookup=version_get,
        extra_versions=extra_versions_list,
        output_filter_factory=output_filter,
        device=settings.INFERENCE_DEVICE,
        dtype=settings.INFERENCE_DTYPE,
        slots=settings.INFERENCE_SLOTS,
        max_context=settings.INFERENCE_MAX_CONTEXT,
        step_token_budget=settings.INFERENCE_STEP_TOKENS,
        speculative_tokens=settings.INFERENCE_SPECULATIVE_TOKENS,
        speculative_max_batch=settings.INFERENCE_SPECULATIVE_MAX_BATCH,
        gguf_step_token_budget=settings.INFERENCE_GGUF_STEP_TOKENS,
        gguf_kv_tokens=settings.INFERENCE_GGUF_KV_TOKENS,
        gguf_kv_max_tokens=settings.INFERENCE_GGUF_KV_MAX_TOKENS,
        gguf_kv_type=settings.INFERENCE_GGUF_KV_TYPE,
        threads=settings.INFERENCE_THREADS,
        heartbeat_interval=settings.INFERENCE_HEARTBEAT_INTERVAL,
        heartbeat_ttl=settings.INFERENCE_HEARTBEAT_TTL,
        claim_timeout=settings.INFERENCE_CLAIM_TIMEOUT,
        drain_timeout=settings.INFERENCE_DRAIN_TIMEOUT,
        on_finished=generation_store,
        on_redis_restart=requests_lost_end,
    )
