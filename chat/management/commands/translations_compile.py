from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from chat.languages import catalogues_compile


class Command(BaseCommand):
    help = (
        "Compile the translation catalogues (locale/*/LC_MESSAGES/*.po) to .mo files "
        "with polib, no GNU gettext needed; only those missing or older than their .po "
        "unless --force."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--force", action="store_true", help="compile every catalogue")

    def handle(self, *args: Any, **options: Any) -> None:
        written = catalogues_compile(force=options["force"])
        for path in written:
            self.stdout.write(f"Compiled {path}")
        if not written and options["verbosity"] > 1:
            self.stdout.write("Every catalogue is up to date.")
