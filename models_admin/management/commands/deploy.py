from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from models_admin.models import ModelVersion, Promotion
from models_admin.selectors import canary_get_active, model_version_get_production
from models_admin.services.model_versions import (
    canary_start,
    canary_stop,
    model_version_promote,
    model_version_rollback,
)


class Command(BaseCommand):
    help = (
        "Move production from the command line, as the dashboard does: status, "
        "promote VERSION, rollback, canary VERSION --percent N, canary-stop."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "action", choices=["status", "promote", "rollback", "canary", "canary-stop"]
        )
        parser.add_argument("version", nargs="?", help="version name (promote, canary)")
        parser.add_argument("--percent", type=int, default=10, help="canary share, 1-99")
        parser.add_argument("--note", default="", help="why, kept in the audit history")

    def _version(self, name: str | None) -> ModelVersion:
        if not name:
            raise CommandError("Name the version.")
        version = ModelVersion.objects.filter(name=name).first()
        if version is None:
            raise CommandError(f"No model version named {name!r}.")
        return version

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "promote":
                version = self._version(options["version"])
                if not options["note"]:
                    raise CommandError("Say why with --note; it goes in the audit history.")
                done = model_version_promote(version=version, note=options["note"])
                if done is None:
                    self.stdout.write(f"{version.name} is already in production.")
            elif action == "rollback":
                done = model_version_rollback(note=options["note"])
                self.stdout.write(f"Rolled back to {done.to_version.name}.")
            elif action == "canary":
                version = self._version(options["version"])
                canary_start(version=version, percent=options["percent"], note=options["note"])
            elif action == "canary-stop" and canary_stop() is None:
                self.stdout.write("No canary was running.")
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self._status()

    def _status(self) -> None:
        production = model_version_get_production()
        canary = canary_get_active()
        self.stdout.write(f"Production: {production.name if production else 'none'}")
        if canary is not None:
            self.stdout.write(f"Canary: {canary.version.name} at {canary.percent}%")
        last = Promotion.objects.select_related("from_version", "to_version", "by").first()
        if last is not None:
            who = last.by.get_username() if last.by else "system"
            self.stdout.write(
                f"Last promotion: {last} by {who} at {last.created_at:%Y-%m-%d %H:%M}"
            )
