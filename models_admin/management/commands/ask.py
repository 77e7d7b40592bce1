from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.engine import chat_answer
from inference.engines import EngineOptions, engine_open
from inference.loading import ModelLoadError, threads_configure
from models_admin.selectors import model_version_get_production


class Command(BaseCommand):
    help = "Ask the production model (or a model folder) one question and print the answer."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("question")
        parser.add_argument("--model", type=Path, help="a model folder instead of production")
        parser.add_argument("--system", default="", help="a system prompt")
        parser.add_argument("--max-new-tokens", type=int, default=256)
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--seed", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        folder = options["model"]
        if folder is None:
            version = model_version_get_production()
            if version is None:
                raise CommandError("No model version is in production; run `make run` first.")
            folder = version.path
        threads_configure(settings.INFERENCE_THREADS)
        try:
            engine = engine_open(
                folder,
                device=settings.INFERENCE_DEVICE,
                dtype=settings.INFERENCE_DTYPE,
                options=EngineOptions(
                    slots=1, max_context=4096, threads=settings.INFERENCE_THREADS
                ),
            )
        except ModelLoadError as exc:
            raise CommandError(str(exc)) from None
        messages = [{"role": "user", "content": options["question"]}]
        if options["system"]:
            messages.insert(0, {"role": "system", "content": options["system"]})

        def echo(text: str) -> None:
            self.stdout.write(text, ending="")
            self.stdout.flush()

        try:
            chat_answer(
                engine,
                messages,
                max_new_tokens=options["max_new_tokens"],
                temperature=options["temperature"],
                seed=options["seed"],
                on_text=echo,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("")
        sys.stdout.flush()
