"""Staff changes to API keys: a key's limits and which versions it may
call, and revoking a key on its owner's behalf. Each change is logged
with who made it."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import ApiKey
from chat.services.api_keys import api_key_revoke
from models_admin.models import KnowledgeBase

logger = logging.getLogger(__name__)

#: ``knowledge_base`` not given: the key keeps its base.
_UNCHANGED: Any = object()

LIMIT_FIELDS = ["rate_limit_per_minute", "monthly_token_quota", "all_versions"]
#: Set with the limits, but not carried to the owner's next keys.
KEY_FIELDS = [*LIMIT_FIELDS, "knowledge_base"]


def api_key_limits_set(
    *,
    key: ApiKey,
    rate_limit_per_minute: int | None,
    monthly_token_quota: int | None,
    all_versions: bool,
    by: AbstractBaseUser | None,
    knowledge_base: KnowledgeBase | None = _UNCHANGED,
) -> ApiKey:
    """Set the key's limits: requests a minute (None: the site default),
    tokens a month (None: the site default; 0: no quota) and whether it
    may call every version that is not archived. The key's calls see the
    change from their next request on, and the user's next keys start with
    these limits (``api_key_limits_inherited``). ``knowledge_base``, when
    given, is the base its calls are grounded in by default (None: none);
    it is the key's own and does not pass to the next keys."""
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        # The API reads 0 as "the default"; refuse it rather than let a
        # limit of zero quietly mean sixty.
        raise ValidationError(
            {
                "rate_limit_per_minute": [
                    gettext("At least 1 a minute; leave it empty for the default.")
                ]
            }
        )
    fields = LIMIT_FIELDS if knowledge_base is _UNCHANGED else KEY_FIELDS
    before = {name: getattr(key, name) for name in fields}
    key.rate_limit_per_minute = rate_limit_per_minute
    key.monthly_token_quota = monthly_token_quota
    key.all_versions = all_versions
    if knowledge_base is not _UNCHANGED:
        key.knowledge_base = knowledge_base
    key.limits_set_at = timezone.now()
    try:
        key.full_clean()
    except ValidationError:
        for name, value in before.items():
            setattr(key, name, value)
        raise
    key.save(update_fields=[*fields, "limits_set_at"])
    logger.info(
        "%s set the limits of API key %s (%s) from %s to %s",
        by,
        key.pk,
        key.prefix,
        before,
        {name: getattr(key, name) for name in fields},
    )
    return key


def api_key_admin_revoke(*, key: ApiKey, by: AbstractBaseUser | None) -> bool:
    """Revoke the key for its owner; return False if it already was."""
    if not key.active:
        return False
    api_key_revoke(key=key)
    logger.info("%s revoked API key %s (%s) of user %s", by, key.pk, key.prefix, key.user_id)
    return True
