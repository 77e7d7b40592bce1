"""The speech recogniser an operator registered (a Whisper model folder);
with none active, the speech worker runs pocketsphinx."""

from __future__ import annotations

from django.db import models


class SpeechModel(models.Model):
    name = models.CharField(max_length=200)
    path = models.CharField(max_length=1000)
    #: The one the speech workers load (at most one row is active).
    active = models.BooleanField(default=False)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-registered_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["active"],
                condition=models.Q(active=True),
                name="one_active_speech_model",
            )
        ]

    def __str__(self) -> str:
        return self.name
