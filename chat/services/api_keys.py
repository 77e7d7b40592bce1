"""API keys: creation (the key is shown once), revocation, authentication,
and the per-key rate limit and monthly token quota."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.utils import timezone

from chat.models import ApiKey, ApiRequest
from inference.connection import key as redis_key
from inference.connection import redis_client

KEY_PREFIX = "sk-"
#: Characters of a key kept in clear to name it ("sk-" and 8 more).
PREFIX_LENGTH = len(KEY_PREFIX) + 8
#: What a key can look like: the prefix, then URL-safe base64. Anything
#: else is refused before the database sees it (PostgreSQL rejects a NUL
#: byte in a query with an error, not a miss).
KEY_SHAPE = re.compile(r"sk-[A-Za-z0-9_-]{8,120}")
#: How often last_used_at is written for a busy key.
LAST_USED_EVERY = timedelta(seconds=60)


class ApiLimitError(Exception):
    """A refused call: 429 with a Retry-After, or the quota spent."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(*, user: AbstractBaseUser, name: str) -> tuple[ApiKey, str]:
    """Make a key for user; return it and the secret, which is not stored
    and cannot be shown again."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["Name the key, e.g. after the app that uses it."]})
    active = ApiKey.objects.filter(user_id=user.pk, revoked_at__isnull=True).count()
    if active >= settings.API_KEYS_PER_USER:
        raise ValidationError(
            {"name": [f"You can hold {settings.API_KEYS_PER_USER} keys; revoke one first."]}
        )
    for _attempt in range(5):
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(user_id=user.pk, name=name, prefix=raw[:PREFIX_LENGTH], key_hash=_hash(raw))
        key.full_clean(exclude=["prefix"])
        try:
            with transaction.atomic():
                key.save()
        except IntegrityError:
            continue  # the same prefix twice: draw again
        return key, raw
    raise RuntimeError("could not draw a unique key prefix")


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key at once; calls with it get 401 from now on."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def api_key_authenticate(*, raw: str) -> ApiKey | None:
    """The active key for a secret, or None; the comparison takes the same
    time whether the prefix exists or not."""
    if KEY_SHAPE.fullmatch(raw) is None or len(raw) < PREFIX_LENGTH + 8:
        return None
    key = (
        ApiKey.objects.select_related("user")
        .filter(prefix=raw[:PREFIX_LENGTH], revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    expected = key.key_hash if key is not None else _hash("")
    if not hmac.compare_digest(expected, _hash(raw)) or key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_EVERY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def _month_start() -> Any:
    now = timezone.localtime()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def api_key_tokens_this_month(*, key: ApiKey) -> int:
    used = ApiRequest.objects.filter(key=key, created_at__gte=_month_start()).aggregate(
        total=Sum(F("prompt_tokens") + F("completion_tokens"))
    )["total"]
    return int(used or 0)


def api_limits_check(*, key: ApiKey) -> None:
    """Count this call against the key's per-minute limit and check its
    monthly quota; raise ApiLimitError when either is spent."""
    quota = (
        key.monthly_token_quota
        if key.monthly_token_quota is not None
        else settings.API_MONTHLY_TOKEN_QUOTA
    )
    if quota and api_key_tokens_this_month(key=key) >= quota:
        raise ApiLimitError(
            "insufficient_quota",
            f"This key has used its {quota:,} tokens for this month.",
        )
    limit = key.rate_limit_per_minute or settings.API_RATE_LIMIT_PER_MINUTE
    now = time.time()
    window = int(now // 60)
    # The prefix, not the id: ids come back after a database reset, and
    # a new key must not inherit an old one's count.
    counter = redis_key("api", "rate", key.prefix, str(window))
    try:
        client: Any = redis_client()
        pipe = client.pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count = pipe.execute()[0]
    except redis.RedisError:
        return  # limits are best effort when Redis is away; generation fails anyway
    if count > limit:
        retry_after = max(int(60 - now % 60), 1)
        raise ApiLimitError(
            "rate_limit_exceeded",
            f"Rate limit reached: {limit} requests per minute for this key. "
            f"Try again in {retry_after} s.",
            retry_after=retry_after,
        )
