"""Widget sites: their allowed origins, business hours, avatar and
identity secret."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext

from chat.languages import language_supported
from chat.models import WidgetSite

#: scheme://host[:port], the host possibly "*." and a domain.
_ORIGIN = re.compile(
    r"^(https?)://(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9-]+)*)(:\d{1,5})?$"
)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
#: A host name: dot-separated labels of letters, digits and inner hyphens.
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
#: Characters an avatar URL never needs and a policy header must not get:
#: whitespace, directive and source separators, quotes, markup.
_AVATAR_FORBIDDEN = re.compile(r"[\s;,'\"<>\\`]")
_AVATAR_MAX = 200


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
        raise ValidationError({"allowed_origins": [gettext("List at least one origin.")]})
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
        raise ValidationError({"business_hours": [gettext("Business hours are an object.")]})
    try:
        ZoneInfo(str(value.get("timezone") or "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            {
                "business_hours": [
                    gettext("Unknown time zone %(zone)r.") % {"zone": value.get("timezone")}
                ]
            }
        ) from None
    days = value.get("days") or {}
    if not isinstance(days, dict) or set(days) - set(_DAYS):
        raise ValidationError(
            {"business_hours": [gettext("Days are %(days)s.") % {"days": ", ".join(_DAYS)}]}
        )
    for day, spans in days.items():
        for span in spans if isinstance(spans, list) else [None]:
            if (
                not isinstance(span, list | tuple)
                or len(span) != 2
                or not all(isinstance(t, str) and _TIME.match(t) for t in span)
                or span[0] >= span[1]
            ):
                raise ValidationError(
                    {
                        "business_hours": [
                            gettext('%(day)s: each span is ["HH:MM", "HH:MM"], start first.')
                            % {"day": day}
                        ]
                    }
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
                    gettext(
                        "Avatar URL: write an http:// or https:// address of a picture, "
                        "without a user name, spaces, quotes, ';' or ','."
                    )
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
        raise ValidationError({"color": [gettext("A colour is #RRGGBB.")]})
    if site.language:
        site.language = language_supported(site.language) or ""
        if not site.language:
            raise ValidationError({"language": [gettext("Unknown language.")]})
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
