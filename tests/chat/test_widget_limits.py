"""Caps on widget traffic that a new visitor does not reset: messages a
minute per client address and per site, visitors created an hour per
address, and answers generating at once per address and per site."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from chat.services.widget_sites import widget_site_save
from chatsite.asgi import application
from inference.connection import key

TIMEOUT = 30


@pytest.fixture(autouse=True)
def _fresh_counters(redis_conn):
    """Counters of earlier tests (site ids are reused) start from zero."""
    for name in redis_conn.scan_iter(key("widget", "*")):
        redis_conn.delete(name)


@pytest.fixture
def caps(settings):
    """Caps high enough not to matter; each test lowers the one it shows."""
    settings.WIDGET_MESSAGES_PER_MINUTE_PER_ADDRESS = 1000
    settings.WIDGET_MESSAGES_PER_MINUTE_PER_SITE = 1000
    settings.WIDGET_VISITORS_PER_HOUR_PER_ADDRESS = 1000
    settings.WIDGET_GENERATIONS_PER_ADDRESS = 1000
    settings.WIDGET_GENERATIONS_PER_SITE = 1000
    return settings


def _site():
    return widget_site_save(
        data={"name": "Shop", "allowed_origins": "https://shop.example", "messages_per_minute": 10}
    )


class Visitor:
    """One widget frame on a page loaded from ``address``."""

    def __init__(self, site, address: str) -> None:
        self.communicator = WebsocketCommunicator(
            application,
            f"/ws/widget/?key={site.public_key}&origin=https://shop.example",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
        )
        # What Daphne puts there: the peer's address and port.
        self.communicator.scope["client"] = (address, 50_000)
        self.welcome: dict = {}

    async def hello(self, token=None) -> dict:
        connected, _ = await self.communicator.connect(timeout=TIMEOUT)
        assert connected
        await self.communicator.send_json_to({"type": "hello", "token": token})
        frame = await self.communicator.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "welcome":
            self.welcome = frame
        return frame

    async def send(self, text: str = "Hello?") -> dict:
        """Send a message; return the accepted frame or the error."""
        await self.communicator.send_json_to(
            {"type": "message.send", "content": text, "client_id": str(uuid.uuid4())}
        )
        while True:
            frame = await self.communicator.receive_json_from(timeout=TIMEOUT)
            if frame["type"] in ("message.accepted", "error"):
                return frame

    async def close(self) -> None:
        await self.communicator.disconnect()


async def _visitors_send(site, address: str, count: int) -> list[dict]:
    """``count`` new visitors from ``address`` send a message each."""
    frames = []
    for _ in range(count):
        visitor = Visitor(site, address)
        assert (await visitor.hello())["type"] == "welcome"
        frames.append(await visitor.send())
        await visitor.close()
    return frames


def _refused(frame: dict, words: str) -> None:
    assert frame["type"] == "error" and frame["code"] == "rate_limited", frame
    assert words in frame["error"], frame
    assert frame["retry_after"] > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_new_visitors_from_one_address_share_its_message_cap(caps):
    caps.WIDGET_MESSAGES_PER_MINUTE_PER_ADDRESS = 3
    site = await sync_to_async(_site)()
    frames = await _visitors_send(site, "203.0.113.7", 4)
    assert [f["type"] for f in frames[:3]] == ["message.accepted"] * 3
    _refused(frames[3], "3 messages a minute can come from one network address")
    # Another address is not held up; the IPv6 neighbours of one /64 share.
    assert (await _visitors_send(site, "198.51.100.9", 1))[0]["type"] == "message.accepted"
    ipv6 = await _visitors_send(site, "2001:db8:1:2::a", 3)
    ipv6 += await _visitors_send(site, "2001:db8:1:2::b", 1)
    _refused(ipv6[3], "network address")


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_site_takes_only_so_many_messages_a_minute_from_all_addresses(caps):
    caps.WIDGET_MESSAGES_PER_MINUTE_PER_SITE = 2
    site = await sync_to_async(_site)()
    frames = []
    for address in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        frames += await _visitors_send(site, address, 1)
    assert [f["type"] for f in frames[:2]] == ["message.accepted"] * 2
    _refused(frames[2], "This site takes at most 2 messages a minute")


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_one_address_creates_only_so_many_visitors_an_hour(caps):
    caps.WIDGET_VISITORS_PER_HOUR_PER_ADDRESS = 2
    site = await sync_to_async(_site)()
    first = Visitor(site, "203.0.113.20")
    assert (await first.hello())["type"] == "welcome"
    await first.communicator.send_json_to({"type": "reset"})  # a second new visitor
    second = await first.communicator.receive_json_from(timeout=TIMEOUT)
    assert second["type"] == "welcome"
    await first.close()
    third = Visitor(site, "203.0.113.20")
    _refused(await third.hello(), "2 new visitors an hour can come from one network address")
    await third.close()
    # Known visitors come back, and other addresses start new ones.
    back = Visitor(site, "203.0.113.20")
    assert (await back.hello(second["token"]))["type"] == "welcome"
    await back.close()
    other = Visitor(site, "203.0.113.21")
    assert (await other.hello())["type"] == "welcome"
    await other.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_answers_generating_at_once_are_capped_per_address_and_per_site(caps):
    # No inference worker runs: answers stay pending until stopped.
    caps.WIDGET_GENERATIONS_PER_ADDRESS = 1
    caps.WIDGET_GENERATIONS_PER_SITE = 2
    site = await sync_to_async(_site)()
    one = Visitor(site, "203.0.113.30")
    await one.hello()
    accepted = await one.send()
    assert accepted["type"] == "message.accepted"
    two = Visitor(site, "203.0.113.30")
    await two.hello()
    _refused(await two.send(), "At most 1 answers can be generated at once from one network")
    # Once the first answer is stopped, the address may start another.
    await one.communicator.send_json_to(
        {"type": "generation.stop", "message": accepted["answer"]["id"]}
    )
    while (await one.communicator.receive_json_from(timeout=TIMEOUT))["type"] != (
        "message.finished"
    ):
        pass
    assert (await two.send())["type"] == "message.accepted"
    three = Visitor(site, "203.0.113.31")
    await three.hello()
    assert (await three.send())["type"] == "message.accepted"
    four = Visitor(site, "203.0.113.32")
    await four.hello()
    _refused(await four.send(), "answering 2 questions at once")
    for visitor in (one, two, three, four):
        await visitor.close()
