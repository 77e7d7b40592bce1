"""The inference worker wired to the apps, as ``run_inference_worker``
runs it: the model versions in service come from the registry, output
filter rules from the filter rules, and finished generations and requests
lost with Redis go to the chat's services.

The only module of ``inference`` that imports ``chat`` or
``models_admin``; the worker itself knows nothing of Django.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from chat.services.completions import completion_usage_store
from chat.services.messages import generations_end_lost, message_generation_finish
from inference.connection import filters_epoch_key, redis_client, worker_keys
from inference.content_filter import RuleSet, StreamFilter
from inference.engine import OutputFilter
from inference.worker.loop import InferenceWorker
from inference.worker.versions import VersionSpec
from models_admin.models import ModelVersion
from models_admin.selectors import model_version_get_production, model_versions_serving
from models_admin.selectors.filters import filter_specs
from models_admin.services.filters import filter_hits_record

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


class _OutputRules:
    """The output rules per surface and widget site, compiled on first use
    and dropped when the rules' epoch in Redis moves; each new request
    reads the epoch (one small Redis read), so a change applies from the
    next request on."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.specs: list[dict[str, Any]] | None = None
        self.compiled: dict[tuple[str, int | None], RuleSet] = {}

    def filter_for(self, payload: dict[str, Any]) -> StreamFilter | None:
        try:
            client: Any = redis_client()
            epoch = client.get(filters_epoch_key())
        except redis.RedisError:
            epoch = self.epoch
        if epoch != self.epoch or self.specs is None:
            self.epoch = epoch
            close_old_connections()
            self.specs = filter_specs()
            self.compiled = {}
            logger.info("Loaded %d content filter rule(s)", len(self.specs))
        surface = str(payload.get("surface") or "chat")
        site = payload.get("site") if isinstance(payload.get("site"), int) else None
        rules = self.compiled.get((surface, site))
        if rules is None:
            rules = RuleSet.from_specs(
                self.specs,
                scope="output",
                surface=surface,
                site=site,
                notice=settings.FILTER_BLOCK_NOTICE,
                on_error=lambda spec, exc: logger.error(
                    "Filter rule %s does not compile: %s", spec.get("name"), exc.message
                ),
            )
            self.compiled[(surface, site)] = rules
        return StreamFilter(rules) if rules else None


def output_filter_factory_build() -> Callable[[dict[str, Any]], OutputFilter | None]:
    """Return what gives each request its output filter, from the output
    rules in force for its surface and widget site."""
    return _OutputRules().filter_for


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
        output_filter_factory=output_filter_factory_build(),
        device=settings.INFERENCE_DEVICE,
        dtype=settings.INFERENCE_DTYPE,
        slots=settings.INFERENCE_SLOTS,
        max_context=settings.INFERENCE_MAX_CONTEXT,
        step_token_budget=settings.INFERENCE_STEP_TOKENS,
        speculative_tokens=settings.INFERENCE_SPECULATIVE_TOKENS,
        speculative_max_batch=settings.INFERENCE_SPECULATIVE_MAX_BATCH,
        heartbeat_interval=settings.INFERENCE_HEARTBEAT_INTERVAL,
        heartbeat_ttl=settings.INFERENCE_HEARTBEAT_TTL,
        claim_timeout=settings.INFERENCE_CLAIM_TIMEOUT,
        drain_timeout=settings.INFERENCE_DRAIN_TIMEOUT,
        on_finished=generation_store,
        on_redis_restart=requests_lost_end,
    )
