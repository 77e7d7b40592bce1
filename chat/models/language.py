"""The language a user picked for the site's pages, mails and sockets."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class LanguageChoice(models.Model):
    """A user's language, a code of ``LANGUAGES``. No row means the
    browser's (the django_language cookie, else Accept-Language)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="language_choice"
    )
    #: Not choices, so that adding a language needs no migration; the
    #: service checks the code against ``LANGUAGES``.
    language = models.CharField(max_length=15)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"language of {self.user_id}: {self.language}"
