"""Widget visitors and their signed tokens: starting, resetting and
revoking them, and identity verification of the host's users."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import Conversation, WidgetSite, WidgetVisitor
from chat.services.widget_limits import widget_visitor_limits_check

_SIGNED_AS = "chat.widget.visitor"
#: What identify() takes: a user id of at most this many characters, and
#: the hex of an HMAC-SHA256.
_USER_ID_MAX = 200
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
#: Longer visitor tokens are not ours; they are refused unread.
_TOKEN_MAX = 500


class WidgetError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def identity_signature(*, site: WidgetSite, user_id: str) -> str:
    """What the host's server sends with identify(): HMAC-SHA256 of the
    user id with the site's identity secret, in hex."""
    return hmac.new(site.identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def _user_id_clean(user_id: Any) -> str:
    """Return the host's user id as text: a string of printable characters
    or an integer, at most ``_USER_ID_MAX`` characters. Raise WidgetError
    for anything else."""
    refused = WidgetError(
        "identity",
        gettext("identify() needs a user id: text or a number, at most %(max)s long.")
        % {"max": _USER_ID_MAX},
    )
    # bool is an int, but JSON true is no user id.
    if isinstance(user_id, bool) or not isinstance(user_id, str | int):
        raise refused
    if isinstance(user_id, int):
        # str() of a huge int raises ValueError; the bound comes first.
        if abs(user_id) >= 10**_USER_ID_MAX:
            raise refused
        text = str(user_id)
    else:
        if len(user_id) > _USER_ID_MAX:
            raise refused
        text = user_id.strip()
    # Control characters (NUL among them) and lone surrogates cannot be
    # stored everywhere or encoded for the signature.
    if not text or not text.isprintable():
        raise refused
    return text


def _signature_matches(*, site: WidgetSite, user_id: str, signature: Any) -> bool:
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return False
    expected = identity_signature(site=site, user_id=user_id)
    # compare_digest on str raises TypeError for non-ASCII; bytes never do.
    return hmac.compare_digest(expected.encode(), signature.lower().encode())


# --- visitors -----------------------------------------------------------------


def visitor_token(*, visitor: WidgetVisitor) -> str:
    """A signed, timestamped token naming the visitor. It is valid for
    ``WIDGET_VISITOR_TOKEN_DAYS`` and only while the visitor keeps its
    ``token`` (``visitor_reset`` replaces it)."""
    return signing.dumps({"s": visitor.site_id, "v": str(visitor.token)}, salt=_SIGNED_AS)


def _visitor_create(*, site: WidgetSite, address: Any) -> WidgetVisitor:
    widget_visitor_limits_check(address=address)
    return WidgetVisitor.objects.create(site=site, token=uuid.uuid4())


def _token_named(*, site: WidgetSite, token: Any) -> str | None:
    """The visitor ``token`` a visitor token of this site names, or None for
    one that is malformed, forged, expired or from another site."""
    if not isinstance(token, str) or not 0 < len(token) <= _TOKEN_MAX:
        return None
    try:
        data = signing.loads(
            token, salt=_SIGNED_AS, max_age=timedelta(days=settings.WIDGET_VISITOR_TOKEN_DAYS)
        )
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("s") != site.pk:
        return None
    return str(data.get("v"))


def visitor_token_named(*, site: WidgetSite, token: Any) -> str | None:
    """The visitor a valid token of this site names, or None."""
    return _token_named(site=site, token=token)


def visitor_start(*, site: WidgetSite, token: Any, address: Any = None) -> WidgetVisitor:
    """The visitor a token names on this site, or a new anonymous one (a
    token that is forged, expired, revoked or from another site starts
    afresh). A new visitor counts against its client ``address``; raise
    ChatError ``rate_limited`` when the address made too many."""
    named = _token_named(site=site, token=token)
    if named is not None:
        visitor = WidgetVisitor.objects.filter(site=site, token=named).first()
        if visitor is not None:
            WidgetVisitor.objects.filter(pk=visitor.pk).update(last_seen_at=timezone.now())
            return visitor
    return _visitor_create(site=site, address=address)


def visitor_token_revoke(*, site: WidgetSite, token: Any) -> bool:
    """Revoke every token of the visitor ``token`` names (the host page
    reset the widget while no frame was connected to do it). Return
    whether a visitor's tokens were revoked."""
    named = _token_named(site=site, token=token)
    if named is None:
        return False
    return WidgetVisitor.objects.filter(site=site, token=named).update(token=uuid.uuid4()) > 0


@transaction.atomic
def visitor_reset(*, site: WidgetSite, visitor: WidgetVisitor, address: Any) -> WidgetVisitor:
    """Revoke every token of the visitor and start a new anonymous one.
    The old visitor keeps its conversations, out of reach of its tokens;
    an identified visitor is reached again only through identify()."""
    WidgetVisitor.objects.filter(pk=visitor.pk, site=site).update(token=uuid.uuid4())
    return _visitor_create(site=site, address=address)


@transaction.atomic
def visitor_identify(
    *, site: WidgetSite, visitor: WidgetVisitor, user_id: Any, signature: Any
) -> WidgetVisitor:
    """Link the visitor to the host's user when the signature is right.

    An anonymous visitor becomes the user's visitor, or hands its
    conversations to the visitor the user already has (from any device).
    A visitor identified as someone else is left as it is: the user gets
    their own visitor, existing or new. A malformed user id or a wrong
    signature raises WidgetError and changes nothing.
    """
    user_id = _user_id_clean(user_id)
    if not _signature_matches(site=site, user_id=user_id, signature=signature):
        raise WidgetError(
            "identity", gettext("The identity signature does not match; still anonymous.")
        )
    # Both rows locked in one query, in id order, so concurrent calls
    # take the locks in the same order.
    rows = list(
        WidgetVisitor.objects.select_for_update()
        .filter(Q(pk=visitor.pk) | Q(site=site, external_id=user_id))
        .order_by("pk")
    )
    current = next((row for row in rows if row.pk == visitor.pk), visitor)
    known = next((row for row in rows if row.external_id == user_id), None)
    if known is not None:
        if known.pk != current.pk and not current.external_id:
            Conversation.objects.filter(visitor=current).update(visitor=known)
        return known
    if current.external_id:
        # Someone else's visitor: relabelling it would hand them the
        # other person's conversations.
        return WidgetVisitor.objects.create(site=site, token=uuid.uuid4(), external_id=user_id)
    current.external_id = user_id
    current.save(update_fields=["external_id", "last_seen_at"])
    return current
