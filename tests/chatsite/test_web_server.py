"""The web process as the Procfile starts it (a real Daphne): who the
client is behind proxies, how big a request body may be, and how a socket
that misbehaves is closed."""

from __future__ import annotations

import http.client
import re
import socket

import pytest
import requests
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import free_port, wait_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


def _web_user():
    """A user whose password the web process can check: it keeps the real
    hashers, not the tests' fast one."""
    user = UserFactory()
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    user.save(update_fields=["password"])
    return user


def _login(session: requests.Session, base: str, username: str, password: str, forwarded: str):
    page = session.get(f"{base}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    return session.post(
        f"{base}/accounts/login/",
        data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
        headers={"X-Forwarded-For": forwarded},
        allow_redirects=False,
        timeout=30,
    )


def test_a_forged_x_forwarded_for_does_not_escape_the_login_lockout(web_process):
    """With no trusted proxy, every login attempt counts against the socket
    address, whatever X-Forwarded-For says: after the failure limit the
    right password is refused from a "new" address too."""
    port = free_port()
    web_process(port, LOGIN_FAILURE_LIMIT="3")
    base = f"http://127.0.0.1:{port}"
    user, other = _web_user(), _web_user()
    session = requests.Session()

    for attempt in range(3):
        response = _login(session, base, user.username, "wrong", f"203.0.113.{attempt + 1}")
        assert response.status_code in (200, 429), response.status_code

    response = _login(session, base, user.username, PASSWORD, "198.51.100.7")
    assert response.status_code == 429
    # The right password works where no lockout stands in the way.
    response = _login(requests.Session(), base, other.username, PASSWORD, "198.51.100.7")
    assert response.status_code == 302


def _raw_request(port: int, head: str, chunks: list[bytes]) -> tuple[int, bytes]:
    """Send a request head, then body bytes while the server reads them;
    return the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def test_oversized_bodies_are_refused_with_413_before_authentication(web_process):
    """A body over the cap is refused with 413 (not the 401 of a request
    without a key), whether it declares its length or comes in chunks; a
    body under the cap reaches the view; the dataset upload's larger cap
    lets a body past the general one through to the view's own checks."""
    port = free_port()
    web_process(port, HTTP_MAX_BODY_BYTES="100000", HTTP_MAX_UPLOAD_BYTES="400000")
    base = f"http://127.0.0.1:{port}"

    small = requests.post(f"{base}/v1/chat/completions", data=b"{}", timeout=30)
    assert small.status_code == 401

    declared = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 64000000\r\n\r\n"
    )
    status, body = _raw_request(port, declared, [])
    assert status == 413
    assert b"100,000 bytes" in body

    chunked = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 50_000
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, body = _raw_request(port, chunked, [frame] * 4 + [b"0\r\n\r\n"])
    assert status == 413
    assert b"100,000 bytes" in body

    # 200 kB to the upload page: past the general cap, under the upload
    # one, so the view answers (a redirect to log in, not 413).
    upload = requests.post(
        f"{base}/dashboard/training/datasets/upload/",
        data=b"x" * 200_000,
        allow_redirects=False,
        timeout=30,
    )
    assert upload.status_code != 413


def _group_members(redis_conn, group: str) -> int:
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    return redis_conn.zcard(f"{prefix}:group:{group}")


def _close_code(ws) -> int | None:
    try:
        while True:
            ws.recv(timeout=30)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def test_flooding_and_oversized_sockets_close_with_1008_and_1009_and_leave_their_groups(
    web_process, redis_conn, tmp_path
):
    """Through Daphne the client sees 1008 for a flood and 1009 for a
    too-big frame, the server logs no traceback, and the closed socket's
    channel leaves the user's group."""
    port = free_port()
    web = web_process(port)
    user = UserFactory()
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    options = {
        "origin": f"http://127.0.0.1:{port}",
        "additional_headers": {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
        "open_timeout": 30,
    }
    group = f"chat.user.{user.pk}"
    url = f"ws://127.0.0.1:{port}/ws/chat/"

    for attack, code in (("flood", 1008), ("too_big", 1009)):
        with connect(url, **options) as ws:
            assert '"hello"' in ws.recv(timeout=30)
            assert _group_members(redis_conn, group) == 1
            try:
                if attack == "flood":
                    for _ in range(1000):
                        ws.send('{"type": "ping"}')
                else:
                    ws.send("x" * (settings.CHAT_MAX_FRAME_BYTES + 1))
            except ConnectionClosed:
                pass
            assert _close_code(ws) == code, attack
        wait_for(lambda: _group_members(redis_conn, group) == 0)

    web.terminate()
    web.wait(timeout=30)
    log = (tmp_path / "web-0.log").read_text()
    assert "Traceback" not in log, log[-3000:]
