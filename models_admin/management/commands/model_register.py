from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from inference.engines import folder_check
from inference.loading import ModelLoadError
from models_admin.services import model_version_create, model_version_promote


class Command(BaseCommand):
    help = (
        "Register a model folder as a model version: a transformers folder, or a "
        "folder with one .gguf file (served by llama.cpp) and its tokenizer files."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--name", help="version name (default: the folder's name)")
        parser.add_argument("--promote", action="store_true", help="make it production")
        parser.add_argument("--note", default="", help="promotion note")

    def handle(self, *args: Any, **options: Any) -> None:
        folder: Path = options["folder"].resolve()
        try:
            folder_check(folder)
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None
        try:
            version = model_version_create(name=options["name"] or folder.name, folder=folder)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if options["promote"]:
            model_version_promote(version=version, note=options["note"] or "Registered by hand.")
            version.refresh_from_db()
        self.stdout.write(f"Model version {version.name} ({version.state}) at {version.path}")
