from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from inference.loading import threads_configure
from inference.worker.wiring import worker_build


class Command(BaseCommand):
    help = "Run an inference worker: claim requests, generate, stream tokens to Redis."

    def handle(self, *args: Any, **options: Any) -> None:
        threads_configure(settings.INFERENCE_THREADS)
        worker = worker_build()

        def stop(signum: int, _frame: object) -> None:
            worker.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Inference worker {worker.worker_id} starting")
        worker.run()
