from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from inference.speech.keys import SpeechKeys, SpeechLimits
from inference.speech.worker import SpeechWorker
from models_admin.services.speech import speech_model_path


def _model_path() -> Path | None:
    close_old_connections()
    return speech_model_path()


class Command(BaseCommand):
    help = "Run a speech worker: recognise dictations sent by the chat and widget sockets."

    def handle(self, *args: Any, **options: Any) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=10
        )
        worker = SpeechWorker(
            client,
            SpeechKeys(settings.REDIS_KEY_PREFIX),
            model_path=_model_path,
            capacity=settings.SPEECH_WORKER_CAPACITY,
            limits=SpeechLimits(
                max_seconds=float(settings.SPEECH_MAX_SECONDS),
                idle_s=float(settings.SPEECH_IDLE_SECONDS),
            ),
        )

        def stop(signum: int, _frame: object) -> None:
            worker.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"Speech worker {worker.id} starting")
        worker.run()
