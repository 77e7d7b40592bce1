from __future__ import annotations

import logging
import signal
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.utils import timezone

from chat.services.completions import completion_usage_store
from chat.services.messages import generations_end_lost, message_generation_finish
from inference.connection import filters_epoch_key, redis_client, worker_keys
from inference.content_filter import RuleSet, StreamFilter
from inference.loading import threads_configure
from inference.worker import InferenceWorker, VersionSpec
from models_admin.models import ModelVersion
from models_admin.selectors import model_version_get_production, model_versions_serving
from models_admin.selectors.filters import filter_specs
from models_admin.services.filters import filter_hits_record

logger = logging.getLogger(__name__)


def _spec(version: ModelVersion | None) -> VersionSpec | None:
    if version is None:
        return None
    return VersionSpec(id=version.pk, name=version.name, path=version.path)


def _production_version() -> VersionSpec | None:
    close_old_connections()
    return _spec(model_version_get_production())


def _extra_versions() -> list[VersionSpec]:
    close_old_connections()
    return [
        spec
        for version in model_versions_serving()
        if version.state != ModelVersion.State.PRODUCTION and (spec := _spec(version))
    ]


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


def _generation_store(generation_id: str, final: dict[str, Any], text: str) -> None:
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


def _requests_lost(waiting: list[str]) -> None:
    # Answers created since the restart have their request queued or
    # running; older ones that have neither were lost with Redis.
    close_old_connections()
    before = timezone.now() - timedelta(seconds=10)
    generations_end_lost(waiting=set(waiting), before=before)


def _version_lookup(version_id: int) -> VersionSpec | None:
    close_old_connections()
    return _spec(ModelVersion.objects.filter(pk=version_id).first())


class Command(BaseCommand):
    help = "Run an inference worker: claim requests, generate, stream tokens to Redis."

    def handle(self, *args: Any, **options: Any) -> None:
        threads_configure(settings.INFERENCE_THREADS)
        worker = InferenceWorker(
            redis_client=redis_client(),
            keys=worker_keys(),
            production_version=_production_version,
            version_lookup=_version_lookup,
            extra_versions=_extra_versions,
            output_filter_factory=_OutputRules().filter_for,
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
            on_finished=_generation_store,
            on_redis_restart=_requests_lost,
        )

        def stop(signum: int, _frame: object) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Inference worker {worker.worker_id} starting")
        worker.run()
