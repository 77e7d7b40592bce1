"""Fetching a knowledge source's URL: HTTP(S) only, a time limit, a size
limit read as the body arrives, redirects followed (each one checked),
and, unless allowed, no address on this host's own networks (loopback,
private, link-local), so a source URL cannot reach internal services.
"""

from __future__ import annotations

import ipaddress
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from urllib.parse import urlsplit

MAX_REDIRECTS = 5
USER_AGENT = "chatsite-knowledge/1.0 (+self-hosted help-center import)"


class FetchError(Exception):
    """A URL that could not be fetched; the message says why."""


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    data: bytes
    content_type: str
    charset: str


def _address_check(host: str, port: int, *, allow_private: bool) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"The host {host} could not be found ({exc}).") from None
    if allow_private:
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise FetchError(
                f"{host} is on a private or local network ({address}); fetching such "
                "addresses is off (KNOWLEDGE_FETCH_PRIVATE)."
            )


def url_check(url: str, *, allow_private: bool) -> tuple[str, int]:
    """The host and port of an http(s) URL that may be fetched."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("Only http:// and https:// addresses can be fetched.")
    if not parts.hostname:
        raise FetchError("The address has no host.")
    if parts.username or parts.password:
        raise FetchError("Addresses with a user name or password are not fetched.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError("The address has an invalid port.") from None
    _address_check(parts.hostname, port, allow_private=allow_private)
    return parts.hostname, port


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.count = 0

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        self.count += 1
        if self.count > MAX_REDIRECTS:
            raise FetchError(f"More than {MAX_REDIRECTS} redirects.")
        url_check(newurl, allow_private=self.allow_private)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def url_fetch(url: str, *, timeout: float, max_bytes: int, allow_private: bool) -> Fetched:
    """The body of ``url``; a ``FetchError`` when it cannot be had within
    ``timeout`` seconds (in all, a slow trickle included) and
    ``max_bytes``."""
    deadline = time.monotonic() + timeout
    url_check(url, allow_private=allow_private)
    opener = urllib.request.build_opener(_Redirects(allow_private))
    accept = "text/html,text/markdown,text/plain,application/pdf;q=0.9,*/*;q=0.1"
    # The scheme is checked above (http and https only), redirects too.
    request = urllib.request.Request(  # noqa: S310
        url, headers={"User-Agent": USER_AGENT, "Accept": accept}
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(
                    f"The page is {int(length):,} bytes; the limit is {max_bytes:,} bytes."
                )
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = response.read(64 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"The page is over the limit of {max_bytes:,} bytes.")
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise FetchError(f"The page did not arrive within {timeout:g} seconds.")
            final_url = response.geturl()
            content_type = response.headers.get_content_type() or ""
            charset = response.headers.get_content_charset() or ""
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        raise FetchError(f"The server answered {exc.code} {exc.reason}.") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, FetchError):
            raise reason from None
        if isinstance(reason, TimeoutError | socket.timeout):
            raise FetchError(f"No answer within {timeout:g} seconds.") from None
        raise FetchError(f"The address could not be reached: {reason}.") from None
    except TimeoutError:
        raise FetchError(f"No answer within {timeout:g} seconds.") from None
    except (HTTPException, OSError, ValueError) as exc:
        raise FetchError(f"The fetch failed: {exc}.") from None
    return Fetched(
        url=final_url, data=b"".join(chunks), content_type=content_type, charset=charset
    )
