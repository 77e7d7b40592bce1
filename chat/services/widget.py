"""The customer-service widget: sites and their allowed origins, visitors
and their signed tokens, identity verification, messages from visitors,
and the handoff to a person."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.models import Conversation, Message, WidgetSite, WidgetVisitor
from chat.services.events import conversation_group, notify_on_commit
from chat.services.messages import ChatError, Sent, generation_stop, question_send
from chat.services.widget_limits import (
    widget_answer_running,
    widget_message_limits_check,
    widget_visitor_limits_check,
)
from models_admin.services.events import dashboard_notify_on_commit

#: scheme://host[:port], the host possibly "*." and a domain.
_ORIGIN = re.compile(
    r"^(https?)://(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9-]+)*)(:\d{1,5})?$"
)
_SIGNED_AS = "chat.widget.visitor"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
#: Added to a site's system prompt when people can take over.
HANDOFF_HINT = (
    "If you cannot answer a question from what you know, say so plainly and offer to "
    'connect the visitor with a person from the team: they can press "Talk to a person".'
)
#: A visitor's messages a minute count over this window.
_WINDOW = timedelta(minutes=1)
#: What identify() takes: a user id of at most this many characters, and
#: the hex of an HMAC-SHA256.
_USER_ID_MAX = 200
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
#: A host name: dot-separated labels of letters, digits and inner hyphens.
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
#: Characters an avatar URL never needs and a policy header must not get:
#: whitespace, directive and source separators, quotes, markup.
_AVATAR_FORBIDDEN = re.compile(r"[\s;,'\"<>\\`]")
_AVATAR_MAX = 200
#: Longer visitor tokens are not ours; they are refused unread.
_TOKEN_MAX = 500


class WidgetError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- sites --------------------------------------------------------------------


def origins_clean(text: str) -> str:
    """One origin per line, lower-cased; raise ValidationError naming every
    line that is not ``https://host[:port]`` or ``https://*.domain``."""
    lines = [line.strip().lower().rstrip("/") for line in text.splitlines() if line.strip()]
    bad = [line for line in lines if not _ORIGIN.match(line)]
    if bad:
        raise ValidationError(
            {
                "allowed_origins": [
                    f"Not an origin: {line!r} (write https://shop.example or "
                    "https://*.example.com, one per line)."
                    for line in bad
                ]
            }
        )
    if not lines:
        raise ValidationError({"allowed_origins": ["List at least one origin."]})
    return "\n".join(dict.fromkeys(lines))


def origin_allowed(*, site: WidgetSite, origin: str | None) -> bool:
    """Whether a page at origin may embed the site's widget: an exact
    match, or a subdomain of a ``*.`` entry (not the bare domain)."""
    if not origin:
        return False
    origin = origin.strip().lower().rstrip("/")
    match = _ORIGIN.match(origin)
    if match is None or match.group(2):
        return False
    for allowed in site.origin_list():
        allowed = allowed.lower()
        if origin == allowed:
            return True
        if "://*." in allowed:
            scheme, rest = allowed.split("://*.", 1)
            domain, _colon, port = rest.partition(":")
            o_scheme, o_rest = origin.split("://", 1)
            o_host, _c, o_port = o_rest.partition(":")
            if o_scheme == scheme and o_port == port and o_host.endswith("." + domain):
                return True
    return False


def business_hours_clean(value: Any) -> dict[str, Any]:
    """``{"timezone": "Europe/Paris", "days": {"mon": [["09:00", "18:00"]]}}``
    or {} for always open; raise ValidationError saying what is wrong."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValidationError({"business_hours": ["Business hours are an object."]})
    try:
        ZoneInfo(str(value.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            {"business_hours": [f"Unknown time zone {value.get('timezone')!r}."]}
        ) from None
    days = value.get("days") or {}
    if not isinstance(days, dict) or set(days) - set(_DAYS):
        raise ValidationError({"business_hours": [f"Days are {', '.join(_DAYS)}."]})
    for day, spans in days.items():
        for span in spans if isinstance(spans, list) else [None]:
            if (
                not isinstance(span, list | tuple)
                or len(span) != 2
                or not all(isinstance(t, str) and _TIME.match(t) for t in span)
                or span[0] >= span[1]
            ):
                raise ValidationError(
                    {"business_hours": [f'{day}: each span is ["HH:MM", "HH:MM"], start first.']}
                )
    return {"timezone": str(value.get("timezone") or "UTC"), "days": days}


def site_online(*, site: WidgetSite, now: datetime | None = None) -> bool:
    """Whether people answer now (always, without business hours)."""
    hours = site.business_hours or {}
    if not hours.get("days"):
        return True
    zone = ZoneInfo(hours.get("timezone") or "UTC")
    local = (now or timezone.now()).astimezone(zone)
    clock = local.strftime("%H:%M")
    spans = hours["days"].get(_DAYS[local.weekday()], [])
    return any(start <= clock < end for start, end in spans)


def avatar_origin(url: Any) -> str | None:
    """Return ``scheme://host[:port]`` of an avatar URL fit for the frame's
    Content-Security-Policy, or None for an empty or unfit one: another
    scheme, user info, a host that is not a plain name, a bad port, or a
    character that could end a directive or a source."""
    if not isinstance(url, str) or not url or len(url) > _AVATAR_MAX:
        return None
    if _AVATAR_FORBIDDEN.search(url) or not url.isprintable():
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or "@" in parts.netloc:
        return None
    if not _HOST.fullmatch(host) or not url.lower().startswith(f"{parts.scheme}://"):
        return None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def avatar_url_clean(value: Any) -> str:
    """An avatar URL as stored: empty, or an http(s) URL without user
    info, whitespace, ``;``, ``,`` or quotes (it goes into the frame's
    policy). Raise ValidationError otherwise."""
    url = (value or "").strip() if isinstance(value, str) else value
    if url == "":
        return ""
    if avatar_origin(url) is None:
        raise ValidationError(
            {
                "avatar_url": [
                    "Avatar URL: write an http:// or https:// address of a picture, "
                    "without a user name, spaces, quotes, ';' or ','."
                ]
            }
        )
    return str(url)


def widget_site_save(*, data: dict[str, Any], site: WidgetSite | None = None) -> WidgetSite:
    """Create a site (with a new public key and identity secret) or change
    one; raise ValidationError keyed by field."""
    site = site or WidgetSite(
        public_key="wk_" + secrets.token_urlsafe(18), identity_secret=secrets.token_hex(32)
    )
    for name, value in data.items():
        if name in ("public_key", "identity_secret", "id", "pk"):
            continue
        setattr(site, name, value)
    site.allowed_origins = origins_clean(site.allowed_origins or "")
    site.business_hours = business_hours_clean(site.business_hours)
    site.avatar_url = avatar_url_clean(site.avatar_url)
    if not re.match(r"^#[0-9a-fA-F]{6}$", site.color or ""):
        raise ValidationError({"color": ["A colour is #RRGGBB."]})
    site.full_clean()
    site.save()
    return site


def widget_site_secret_rotate(*, site: WidgetSite) -> WidgetSite:
    """A new identity secret: signatures made with the old one stop working."""
    site.identity_secret = secrets.token_hex(32)
    site.save(update_fields=["identity_secret", "updated_at"])
    return site


def site_get_by_key(*, key: Any) -> WidgetSite | None:
    if not isinstance(key, str) or not key:
        return None
    return WidgetSite.objects.filter(public_key=key, enabled=True).first()


def identity_signature(*, site: WidgetSite, user_id: str) -> str:
    """What the host's server sends with identify(): HMAC-SHA256 of the
    user id with the site's identity secret, in hex."""
    return hmac.new(site.identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def _user_id_clean(user_id: Any) -> str:
    """Return the host's user id as text: a string of printable characters
    or an integer, at most ``_USER_ID_MAX`` characters. Raise WidgetError
    for anything else."""
    refused = WidgetError(
        "identity", f"identify() needs a user id: text or a number, at most {_USER_ID_MAX} long."
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
        raise WidgetError("identity", "The identity signature does not match; still anonymous.")
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


def visitor_conversation(*, visitor: WidgetVisitor) -> Conversation | None:
    """The visitor's current conversation (the latest not closed)."""
    return (
        Conversation.objects.filter(visitor=visitor)
        .exclude(handoff=Conversation.Handoff.CLOSED)
        .order_by("-updated_at", "-id")
        .first()
    )


def _conversation_for_send(visitor: WidgetVisitor) -> Conversation:
    conversation = visitor_conversation(visitor=visitor)
    if conversation is not None:
        return conversation
    site = visitor.site
    prompt = site.system_prompt.strip()
    if site.handoff_enabled:
        # The widget shows a "Talk to a person" button; the model points to it.
        prompt = f"{prompt}\n\n{HANDOFF_HINT}" if prompt else HANDOFF_HINT
    conversation = Conversation(
        visitor=visitor,
        site=site,
        source=Conversation.Source.WIDGET,
        system_prompt=prompt[:8000],
    )
    conversation.full_clean()
    conversation.save()
    return conversation


def _visitor_limits(visitor: WidgetVisitor) -> None:
    limit = visitor.site.messages_per_minute
    recent = Message.objects.filter(
        conversation__visitor=visitor,
        role=Message.Role.USER,
        created_at__gte=timezone.now() - _WINDOW,
    ).count()
    if recent >= limit:
        raise ChatError(
            "rate_limited",
            f"You can send {limit} messages a minute; wait a moment.",
            retry_after=60.0,
        )


def widget_message_send(
    *, visitor: WidgetVisitor, content: Any, client_id: Any, address: Any = None
) -> Sent:
    """A visitor's message: answered by the model, or only stored while a
    person owns (or was asked to own) the conversation. It counts against
    the visitor's limit and the caps of its client ``address`` and site;
    raise ChatError ``rate_limited`` naming the one reached."""
    conversation = _conversation_for_send(visitor)
    with_person = conversation.handoff in (
        Conversation.Handoff.REQUESTED,
        Conversation.Handoff.ACTIVE,
    )

    def limits() -> None:
        _visitor_limits(visitor)
        widget_message_limits_check(site=visitor.site, address=address, answer=not with_person)

    sent = question_send(
        conversation=conversation,
        content=content,
        client_id=client_id,
        # Counted once, before the filter: the caps are windows in Redis,
        # not rows the conversation's lock would order.
        limits_early=limits,
        answer=not with_person,
    )
    if sent.created and sent.answer is not None and sent.answer.status == Message.Status.PENDING:
        widget_answer_running(address=address, message_id=sent.answer.pk)
    if with_person and sent.created:
        dashboard_notify_on_commit(
            topic="inbox", payload={"type": "inbox.message", "conversation": conversation.pk}
        )
    return sent


def widget_generation_stop(*, visitor: WidgetVisitor, message_id: Any) -> bool:
    message = Message.objects.filter(
        pk=message_id if isinstance(message_id, int) else -1, conversation__visitor=visitor
    ).first()
    if message is None:
        raise ChatError("not_found", "No such message.")
    return generation_stop(message=message)


# --- handoff ------------------------------------------------------------------


def handoff_state(*, conversation: Conversation | None) -> dict[str, Any]:
    if conversation is None:
        return {"state": Conversation.Handoff.NONE, "agent": None}
    agent = conversation.agent
    name = (agent.first_name or agent.get_username()) if agent is not None else None
    return {"state": conversation.handoff, "agent": name}


def _handoff_announce(conversation: Conversation) -> None:
    state = handoff_state(conversation=conversation)
    site = conversation.site
    notify_on_commit(
        conversation_group(conversation.pk),
        {
            "type": "handoff.changed",
            "conversation": conversation.pk,
            **state,
            "online": site_online(site=site) if site else True,
            "offline_message": site.offline_message if site else "",
        },
    )
    dashboard_notify_on_commit(
        topic="inbox",
        payload={"type": "inbox.changed", "conversation": conversation.pk, **state},
    )


def _locked(conversation: Conversation) -> Conversation:
    """Lock the conversation row (only it: PostgreSQL refuses FOR UPDATE
    on the nullable side of the outer joins select_related makes)."""
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("agent", "site")
        .get(pk=conversation.pk)
    )


@transaction.atomic
def handoff_request(*, visitor: WidgetVisitor) -> Conversation:
    """The visitor asks for a person. Outside business hours the request
    stands (staff see it later) and the visitor is shown the offline
    message and may leave an email."""
    site = visitor.site
    if not site.handoff_enabled:
        raise ChatError("handoff_off", "This site does not offer a person to talk to.")
    conversation = _locked(_conversation_for_send(visitor))
    if conversation.handoff in (Conversation.Handoff.NONE, Conversation.Handoff.CLOSED):
        conversation.handoff = Conversation.Handoff.REQUESTED
        conversation.handoff_at = timezone.now()
        conversation.save(update_fields=["handoff", "handoff_at", "updated_at"])
    _handoff_announce(conversation)
    return conversation


@transaction.atomic
def visitor_email_leave(*, visitor: WidgetVisitor, email: Any) -> WidgetVisitor:
    try:
        validate_email(email)
    except (ValidationError, TypeError):
        raise ChatError("invalid", "Write a valid email address.") from None
    visitor.email = str(email).strip()
    visitor.save(update_fields=["email", "last_seen_at"])
    conversation = visitor_conversation(visitor=visitor)
    if conversation is not None:
        dashboard_notify_on_commit(
            topic="inbox", payload={"type": "inbox.email", "conversation": conversation.pk}
        )
    return visitor


@transaction.atomic
def handoff_take(*, conversation: Conversation, agent: AbstractBaseUser) -> Conversation:
    """A staff member takes the conversation: the model stays silent and
    the visitor sees who joined."""
    conversation = _locked(conversation)
    if conversation.visitor_id is None:
        raise ChatError("invalid", "Only widget conversations are handed to a person.")
    if conversation.handoff == Conversation.Handoff.CLOSED:
        raise ChatError(
            "invalid", "The conversation is closed; the visitor's next message opens a new one."
        )
    conversation.handoff = Conversation.Handoff.ACTIVE
    conversation.agent_id = agent.pk
    conversation.handoff_at = timezone.now()
    conversation.save(update_fields=["handoff", "agent", "handoff_at", "updated_at"])
    conversation.refresh_from_db()
    _handoff_announce(conversation)
    return conversation


@transaction.atomic
def agent_reply(*, conversation: Conversation, agent: AbstractBaseUser, content: Any) -> Message:
    """A staff member's answer, shown to the visitor at once."""
    conversation = _locked(conversation)
    if conversation.handoff != Conversation.Handoff.ACTIVE or conversation.agent_id != agent.pk:
        raise ChatError("invalid", "Take the conversation before replying.")
    if not isinstance(content, str) or not content.strip():
        raise ChatError("empty", "Write a reply first.")
    reply = Message(
        conversation=conversation,
        parent=conversation.current_leaf,
        role=Message.Role.ASSISTANT,
        status=Message.Status.DONE,
        content=content.strip()[:16_000],
        author_id=agent.pk,
        finished_at=timezone.now(),
    )
    reply.full_clean()
    reply.save()
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf", "updated_at"])
    from chat.selectors import message_serialize

    notify_on_commit(
        conversation_group(conversation.pk),
        {
            "type": "message.created",
            "conversation": conversation.pk,
            "question": None,
            "answer": message_serialize(reply),
        },
    )
    dashboard_notify_on_commit(
        topic="inbox", payload={"type": "inbox.message", "conversation": conversation.pk}
    )
    return reply


@transaction.atomic
def handoff_release(*, conversation: Conversation) -> Conversation:
    """Back to the assistant."""
    conversation = _locked(conversation)
    conversation.handoff = Conversation.Handoff.NONE
    conversation.agent = None
    conversation.save(update_fields=["handoff", "agent", "updated_at"])
    _handoff_announce(conversation)
    return conversation


@transaction.atomic
def handoff_close(*, conversation: Conversation) -> Conversation:
    """End the conversation; the visitor's next message starts a new one."""
    conversation = _locked(conversation)
    conversation.handoff = Conversation.Handoff.CLOSED
    conversation.save(update_fields=["handoff", "updated_at"])
    _handoff_announce(conversation)
    return conversation
