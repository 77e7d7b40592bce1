"""Template context every page gets: the product's name and logo."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.templatetags.static import static


def site_logo_url(logo: str) -> str:
    """Return the URL of a logo given as a URL or a path under static/.

    A value with a scheme (``https:``, ``data:``) or a leading slash is a
    URL already; anything else names a static file.
    """
    if logo.startswith("/") or urlsplit(logo).scheme:
        return logo
    try:
        return static(logo)
    except ValueError:
        # The manifest storage of production refuses a file that
        # collectstatic did not see. A broken picture in the top bar is
        # better than every page failing with 500.
        return settings.STATIC_URL + logo


def site_identity(request: HttpRequest) -> dict[str, str]:
    """Return the product's name and its logo's URL as product_name and
    product_logo_url.

    Not site_name: Django's login and password-reset views put the host
    name there, and a view's context wins over a context processor's.
    """
    return {
        "product_name": settings.SITE_NAME,
        "product_logo_url": site_logo_url(settings.SITE_LOGO),
    }
