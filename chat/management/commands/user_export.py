from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from chat.models import DataExport
from chat.services.data_export import export_build, export_request


class Command(BaseCommand):
    help = (
        "Export everything a user owns (account, conversations with every branch, feedback, "
        "API key metadata and usage) as a zip of JSON files, here and now. The export is "
        "recorded in the privacy log."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--output", type=Path, help="where to write the zip (default: the user's name + .zip)"
        )
        parser.add_argument(
            "--by", default="", help="the staff member who asked (recorded in the privacy log)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        try:
            user = users.get(username=options["username"])
        except users.model.DoesNotExist:
            raise CommandError(f"No user named {options['username']!r}.") from None
        by = None
        if options["by"]:
            by = users.filter(username=options["by"]).first()
            if by is None:
                raise CommandError(f"No user named {options['by']!r} (--by).")
        output: Path = options["output"] or Path(f"{user.get_username()}-data.zip")
        try:
            export = export_request(user=user, requested_by=by, queue=False)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        export = export_build(export)
        if export.state != DataExport.State.READY:
            raise CommandError(export.error or "The export failed.")
        from django.conf import settings

        shutil.copyfile(Path(settings.DATA_EXPORT_DIR) / export.file_name, output)
        counts = ", ".join(
            f"{value} {key.replace('_', ' ')}" for key, value in export.counts.items()
        )
        self.stdout.write(f"Wrote {output} ({export.size_bytes} bytes): {counts}.")
