"""Which language a person reads the site in, and the compiled catalogues.

A signed-in user's own choice (``LanguageChoice``) wins; else the
django_language cookie; else the browser's Accept-Language; else
``LANGUAGE_CODE``. Pages get it from ``LocaleMiddleware`` and
``chat.middleware``, sockets from ``language_from_scope``, the widget
from its site's ``language`` or the visitor's browser.

The ``.po`` files under ``LOCALE_PATHS`` are compiled to ``.mo`` with
polib (``catalogues_compile``), so no GNU gettext is needed to run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polib
from django.conf import settings
from django.utils.translation import get_supported_language_variant
from django.utils.translation.trans_real import parse_accept_lang_header

logger = logging.getLogger(__name__)


def language_supported(code: str | None) -> str | None:
    """Return the code of ``LANGUAGES`` that serves ``code`` (``zh-CN`` is
    served by ``zh-hans``), or None."""
    if not code or len(code) > 35:
        return None
    try:
        return get_supported_language_variant(code.lower())
    except LookupError:
        return None


def language_from_accept(header: str) -> str | None:
    """Return the best supported language of an Accept-Language header."""
    for code, _quality in parse_accept_lang_header(header[:1000]):
        if code == "*":
            break
        supported = language_supported(code)
        if supported:
            return supported
    return None


def language_from_browser(*, cookies: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """Return the language a browser asks for: the cookie's, else the
    Accept-Language header's, else ``LANGUAGE_CODE``."""
    return (
        language_supported(cookies.get(settings.LANGUAGE_COOKIE_NAME))
        or language_from_accept(headers.get("accept-language", ""))
        or settings.LANGUAGE_CODE
    )


def scope_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """Return an ASGI scope's headers by lower-cased name (latin-1)."""
    return {
        bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
        for name, value in scope.get("headers", ())
    }


def language_from_scope(scope: Mapping[str, Any]) -> str:
    """Return the language a socket's browser asks for (cookie, then
    Accept-Language)."""
    return language_from_browser(cookies=scope.get("cookies") or {}, headers=scope_headers(scope))


def widget_language(*, site: Any, browser: str) -> str:
    """Return the language of a site's widget: the site's own
    (``WidgetSite.language``), else the visitor's browser's."""
    return language_supported(site.language) or browser


def language_choices() -> list[tuple[str, str]]:
    """Return ``LANGUAGES``: each language under its own name."""
    return [(code, str(name)) for code, name in settings.LANGUAGES]


# --- catalogues ---------------------------------------------------------------


def _catalogue_paths(roots: Iterable[Path]) -> list[Path]:
    return sorted(path for root in roots for path in Path(root).glob("*/LC_MESSAGES/*.po"))


def catalogues_compile(
    roots: Iterable[Path | str] | None = None, *, force: bool = False
) -> list[Path]:
    """Compile every ``.po`` under ``roots`` (default ``LOCALE_PATHS``) to
    the ``.mo`` beside it when that is missing or older, or always with
    ``force``; return the ``.mo`` files written.

    Fuzzy and untranslated entries are left out, as msgfmt does. Each file
    is written under a temporary name and renamed, so processes compiling
    at once never read half a catalogue.
    """
    written = []
    paths = [Path(root) for root in (roots if roots is not None else settings.LOCALE_PATHS)]
    for po_path in _catalogue_paths(paths):
        mo_path = po_path.with_suffix(".mo")
        if not force and mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        catalogue = polib.pofile(str(po_path))
        fd, temp = tempfile.mkstemp(dir=po_path.parent, prefix=".", suffix=".mo.tmp")
        os.close(fd)
        try:
            catalogue.save_as_mofile(temp)
            os.replace(temp, mo_path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        logger.debug("Compiled %s", mo_path)
        written.append(mo_path)
    return written
