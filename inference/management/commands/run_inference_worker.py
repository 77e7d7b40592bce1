from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from inference.connection import redis_client, worker_heartbeat_key
from inference.loading import threads_configure
from inference.worker import InferenceWorker, VersionSpec
from models_admin.selectors import model_version_get_production


def _production_version() -> VersionSpec | None:
    close_old_connections()
    version = model_version_get_production()
    if version is None:
        return None
    return VersionSpec(id=version.pk, name=version.name, path=version.path)


class Command(BaseCommand):
    help = "Run an inference worker: load the production model and serve it."

    def handle(self, *args: Any, **options: Any) -> None:
        threads_configure(settings.INFERENCE_THREADS)
        worker = InferenceWorker(
            redis_client=redis_client(),
            heartbeat_key=worker_heartbeat_key,
            production_version=_production_version,
            device=settings.INFERENCE_DEVICE,
            dtype=settings.INFERENCE_DTYPE,
            heartbeat_interval=settings.INFERENCE_HEARTBEAT_INTERVAL,
            heartbeat_ttl=settings.INFERENCE_HEARTBEAT_TTL,
        )

        def stop(signum: int, _frame: object) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Inference worker {worker.worker_id} starting")
        worker.run()
