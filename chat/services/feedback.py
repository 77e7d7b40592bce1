"""Thumbs up or down on an answer, with an optional reason."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils.translation import gettext

from chat.models import Feedback, Message


def feedback_set(
    *, user: AbstractBaseUser, message: Message, rating: Any, reason: Any = ""
) -> Feedback | None:
    """Record thumbs up (1) or down (-1) with an optional reason; rating 0
    removes the user's feedback."""
    from chat.services.messages import ChatError  # messages re-exports this module

    if message.role != Message.Role.ASSISTANT or message.status in (
        Message.Status.PENDING,
        Message.Status.SUPPLIED,
    ):
        raise ChatError("invalid", gettext("Feedback goes on finished answers of a model."))
    try:
        rating = int(rating)
    except (TypeError, ValueError, OverflowError):
        raise ChatError("invalid", gettext("rating must be 1, -1 or 0.")) from None
    if rating not in (1, -1, 0):
        raise ChatError("invalid", gettext("rating must be 1, -1 or 0."))
    reason = str(reason or "").strip()
    if len(reason) > 1000:
        raise ChatError("too_long", gettext("Feedback reasons are limited to 1,000 characters."))
    with transaction.atomic():
        if rating == 0:
            Feedback.objects.filter(message=message, user_id=user.pk).delete()
            return None
        feedback, _ = Feedback.objects.update_or_create(
            message=message,
            user_id=user.pk,
            defaults={
                "rating": rating,
                "reason": reason,
                "model_version_id": message.model_version_id,
            },
        )
    return feedback
