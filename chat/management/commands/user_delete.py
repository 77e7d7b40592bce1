from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat.services.privacy import user_delete


class Command(BaseCommand):
    help = (
        "Delete a user's account and everything it owns on their request: conversations, "
        "messages, feedback, API keys, exports and widget identities; dataset rows made "
        "from them keep a lineage mark without text. Recorded in the privacy log."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--by", required=True, help="the staff member carrying it out")
        parser.add_argument("--reason", default="", help="e.g. the request's reference")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model().objects
        user = users.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        by = users.filter(username=options["by"], is_staff=True).first()
        if by is None:
            raise CommandError(f"No staff member named {options['by']!r} (--by).")
        if not options["yes"]:
            answer = input(f"Delete {user.get_username()} and all their data? Type the name: ")
            if answer.strip() != user.get_username():
                raise CommandError("Not confirmed; nothing was deleted.")
        counts = user_delete(user=user, actor=by, reason=options["reason"])
        summary = ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())
        self.stdout.write(f"Deleted {options['username']}: {summary}.")
