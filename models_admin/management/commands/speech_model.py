from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from models_admin.services.speech import speech_model_default, speech_model_register


class Command(BaseCommand):
    help = (
        "Choose the dictation recogniser: a Whisper model folder (transformers' "
        "format), or --default for pocketsphinx. Speech workers swap within seconds."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("folder", type=Path, nargs="?")
        parser.add_argument("--name", default="", help="a name (default: the folder's)")
        parser.add_argument(
            "--default", action="store_true", help="go back to pocketsphinx, the default"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["default"]:
            speech_model_default()
            self.stdout.write("Dictation uses pocketsphinx.")
            return
        if options["folder"] is None:
            raise CommandError("name a Whisper model folder, or pass --default")
        try:
            model = speech_model_register(folder=options["folder"], name=options["name"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(f"Dictation uses Whisper model {model.name} at {model.path}")
