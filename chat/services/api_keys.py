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
from django.utils.translation import gettext

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
        raise ValidationError(
            {"name": [gettext("Name the key, e.g. after the app that uses it.")]}
        )
    active = ApiKey.objects.filter(user_id=user.pk, revoked_at__isnull=True).count()
    if active >= settings.API_KEYS_PER_USER:
        raise ValidationError(
            {
                "name": [
                    gettext("You can hold %(count)s keys; revoke one first.")
                    % {"count": settings.API_KEYS_PER_USER}
                ]
            }
        )
    inherited = api_key_limits_inherited(user_id=int(user.pk))
    for _attempt in range(5):
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            user_id=user.pk,
            name=name,
            prefix=raw[:PREFIX_LENGTH],
            key_hash=_hash(raw),
            **inherited,
        )
        key.full_clean(exclude=["prefix"])
        try:
            with transaction.atomic():
                key.save()
        except IntegrityError:
            continue  # the same prefix twice: draw again
        return key, raw
    raise RuntimeError("could not draw a unique key prefix")


#: The limits staff set on a key, which the user's next keys start with.
INHERITED_FIELDS = ("rate_limit_per_minute", "monthly_token_quota", "all_versions")


def api_key_limits_inherited(*, user_id: int) -> dict[str, Any]:
    """The limits a new key of the user starts with: those staff set last
    on any of the user's keys, revoked ones included (empty when staff
    never set any). Revoking a key and minting another keeps them."""
    source = (
        ApiKey.objects.filter(user_id=user_id, limits_set_at__isnull=False)
        .order_by("-limits_set_at", "-pk")
        .first()
    )
    if source is None:
        return {}
    inherited = {name: getattr(source, name) for name in INHERITED_FIELDS}
    return {**inherited, "limits_set_at": source.limits_set_at}


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


def api_user_tokens_this_month(*, user_id: int) -> int:
    """Tokens in and out of the user's calls this calendar month, through
    every key they held, revoked ones included."""
    used = ApiRequest.objects.filter(user_id=user_id, created_at__gte=_month_start()).aggregate(
        total=Sum(F("prompt_tokens") + F("completion_tokens"))
    )["total"]
    return int(used or 0)


def api_limits_check(*, key: ApiKey) -> None:
    """Count this call against the key's per-minute limit and check its
    monthly quota against what its owner used this month through all their
    keys; raise ApiLimitError when either is spent."""
    quota = (
        key.monthly_token_quota
        if key.monthly_token_quota is not None
        else settings.API_MONTHLY_TOKEN_QUOTA
    )
    if quota and api_user_tokens_this_month(user_id=key.user_id) >= quota:
        raise ApiLimitError(
            "insufficient_quota",
            f"This account has used this key's {quota:,} tokens for this month "
            "(all its keys count).",
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
