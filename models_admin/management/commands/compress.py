from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from inference.llamacpp.export import QUANTIZATIONS
from models_admin.models import Compression, ModelVersion
from models_admin.services.compression import compression_run, compression_start


class Command(BaseCommand):
    help = (
        "Make a GGUF copy of a model version for llama.cpp, quantized, register it as a "
        "candidate and measure it (runs here, not on the Celery queue)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("version", help="the version's name or id")
        parser.add_argument(
            "--quantization",
            default="q8_0",
            choices=list(QUANTIZATIONS),
            help="how the weights are stored (default q8_0)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        key = options["version"]
        version = ModelVersion.objects.filter(name=key).first()
        if version is None and key.isdigit():
            version = ModelVersion.objects.filter(pk=int(key)).first()
        if version is None:
            raise CommandError(f"No model version is named {key!r}.")
        try:
            compression = compression_start(
                source=version, quantization=options["quantization"], enqueue=False
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            f"Compressing {compression.source.name} to {compression.quantization}..."
        )
        done = compression_run(compression_id=compression.pk, measure_here=True)
        if done is None or done.state != Compression.State.COMPLETED or done.result is None:
            raise CommandError(f"Compression failed: {done.error if done else 'not run'}")
        result = done.result
        result.refresh_from_db()
        loss = result.metrics.get("eval_loss")
        self.stdout.write(
            f"Model version {result.name} (candidate) at {result.path}: "
            f"{result.metrics.get('size_bytes', 0) / 1e6:.1f} MB, "
            f"{result.metrics.get('tokens_per_s', 0)} tokens/s"
            + (f", eval loss {loss}" if loss is not None else "")
        )
