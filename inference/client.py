"""What ``chat`` (and the API) call to run generations on the workers.

``generation_submit`` validates and queues a request; call it after the
database commit that stores the pending answer (``transaction.on_commit``).
``generation_events`` tails a generation's stream from a sequence number
and ends after the final event, so a reader that reconnects with the last
number it delivered sees nothing twice and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

from inference.connection import (
    GENERATION_TTL_S,
    cancel_key,
    generation_key,
    redis_client,
    requests_stream_key,
    worker_heartbeat_pattern,
)
from inference.protocol import SamplingParams, StreamEvent, event_decode, event_encode
from inference.worker.heartbeat import heartbeats_read

#: A cancel flag outlives any generation that could still read it.
CANCEL_TTL_S = 3600
#: A safety bound on the requests stream; workers delete finished entries,
#: so only a backlog this deep would ever be trimmed.
REQUESTS_MAXLEN = 100_000


def generation_submit(
    *,
    messages: list[dict[str, str]],
    params: dict[str, Any] | None = None,
    model_version_id: int | None = None,
    generation_id: str | None = None,
    extra: dict[str, Any] | None = None,
    prompt: str | None = None,
) -> str:
    """Queue a generation and return its id: an answer to chat messages,
    or (``prompt``) the continuation of plain text. Raise SamplingError for
    bad parameters; the request itself is checked by the worker."""
    SamplingParams.from_dict(params)
    generation_id = generation_id or uuid.uuid4().hex
    payload = {
        "id": generation_id,
        **({"prompt": prompt} if prompt is not None else {}),
        "messages": messages,
        "params": params or {},
        "model_version_id": model_version_id,
        **(extra or {}),
    }
    redis_client().xadd(
        requests_stream_key(),
        {"payload": json.dumps(payload)},
        maxlen=REQUESTS_MAXLEN,
        approximate=True,
    )
    return generation_id


def generation_cancel(generation_id: str) -> None:
    """Ask the worker to stop; it frees the slot within one engine step and
    ends the stream with finish reason ``cancelled``."""
    redis_client().set(cancel_key(generation_id), "1", ex=CANCEL_TTL_S)


def _events(response: list[Any]) -> Iterator[StreamEvent]:
    for _key, entries in response:
        for entry_id, fields in entries:
            yield event_decode(entry_id, fields)


class StreamBroken(Exception):
    """The stream no longer continues what this reader delivered: events
    were lost (Redis dropped its tail and another worker rewrote it). Read
    the generation again from the start."""


class StreamUnavailable(TimeoutError):
    """Redis stayed unreachable for the whole idle timeout."""


#: What a Redis outage raises.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def _writer_changed(event: StreamEvent, last: int, writer: str) -> bool:
    """Whether event has another writer than the event last (by writer):
    then the stream's entry at last must be read to check it."""
    return bool(writer and event.writer and event.writer != writer and last > 0)


def _stream_check(event: StreamEvent, last: int, writer: str, entry: StreamEvent | None) -> None:
    """Raise StreamBroken unless event follows the event last (written by
    writer) without a gap. entry is the stream's entry at last as it is
    now, read when the writer changed: it tells a worker taking over (it
    kept the earlier entries) from a stream rewritten after a loss."""
    if event.seq != last + 1:
        raise StreamBroken(f"expected event {last + 1}, got {event.seq}")
    if _writer_changed(event, last, writer) and (entry is None or entry.writer != writer):
        raise StreamBroken(f"event {last} was rewritten")


def generation_events_sync(
    generation_id: str, *, after_seq: int = 0, timeout_s: float = 300.0
) -> Iterator[StreamEvent]:
    """Blocking reader, for commands and tests. Raise TimeoutError when
    nothing arrives for timeout_s; ride out Redis outages meanwhile."""
    client: Any = redis_client()
    key = generation_key(generation_id)
    last, writer = after_seq, ""
    idle_since = time.monotonic()

    def entry_at(seq: int) -> StreamEvent | None:
        found = client.xrange(key, f"0-{seq}", f"0-{seq}")
        return event_decode(*found[0]) if found else None

    while True:
        try:
            # Short blocks stay under the client's socket timeout.
            response = client.xread({key: f"0-{last}"}, block=1000, count=100)
            events = list(_events(response or []))
            if events:
                idle_since = time.monotonic()
            for event in events:
                entry = entry_at(last) if _writer_changed(event, last, writer) else None
                _stream_check(event, last, writer, entry)
                last, writer = event.seq, event.writer
                yield event
                if event.final:
                    return
        except REDIS_DOWN:
            time.sleep(0.2)
        if time.monotonic() - idle_since > timeout_s:
            raise TimeoutError(f"no event for generation {generation_id} in {timeout_s}s")


async def generation_events(
    generation_id: str, *, after_seq: int = 0, idle_timeout_s: float = 300.0
) -> AsyncGenerator[StreamEvent, None]:
    """Yield the events of a generation after after_seq, ending with the
    final one. Reconnect through Redis outages; raise TimeoutError when
    nothing arrives for idle_timeout_s (StreamUnavailable when Redis was
    away), StreamBroken when the stream stops continuing what was read."""
    key = generation_key(generation_id)
    last, writer = after_seq, ""
    client: Any = None
    backoff = 0.1
    idle_since = time.monotonic()
    outage: BaseException | None = None

    async def entry_at(seq: int) -> StreamEvent | None:
        found = await client.xrange(key, f"0-{seq}", f"0-{seq}")
        return event_decode(*found[0]) if found else None

    try:
        while True:
            left = idle_timeout_s - (time.monotonic() - idle_since)
            if left <= 0:
                if outage is not None:
                    raise StreamUnavailable(f"Redis unreachable: {outage}") from outage
                raise TimeoutError(f"no event for generation {generation_id} in {idle_timeout_s}s")
            try:
                if client is None:
                    # One connection per reader: asyncio connections belong
                    # to one loop.
                    client = aioredis.Redis.from_url(
                        settings.REDIS_URL, decode_responses=True, socket_connect_timeout=3
                    )
                # A frozen server or a silent network would block past the
                # idle timeout: bound the wait.
                response = await asyncio.wait_for(
                    client.xread({key: f"0-{last}"}, block=max(int(left * 1000), 1), count=100),
                    timeout=left + 5,
                )
                backoff, outage = 0.1, None
                events = list(_events(response or []))
                if events:
                    idle_since = time.monotonic()
                for event in events:
                    changed = _writer_changed(event, last, writer)
                    entry = await entry_at(last) if changed else None
                    _stream_check(event, last, writer, entry)
                    last, writer = event.seq, event.writer
                    yield event
                    if event.final:
                        return
            except (TimeoutError, *REDIS_DOWN) as exc:
                outage = exc
                if client is not None:
                    await client.aclose()
                    client = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
    finally:
        if client is not None:
            await client.aclose()


def generation_replay(generation_id: str) -> tuple[str, StreamEvent | None]:
    """Return the text streamed so far and the final event, if any, read
    back from the generation's stream."""
    client: Any = redis_client()
    entries = client.xrange(generation_key(generation_id), "-", "+")
    events = [event_decode(entry_id, fields) for entry_id, fields in entries]
    final = events[-1] if events and events[-1].final else None
    return "".join(event.text for event in events), final


def generation_fail_if_unknown(generation_id: str, *, error: str) -> bool:
    """End a generation that Redis has no trace of with an error event, so
    its readers stop waiting. Return False when its stream exists (a
    worker runs it); a worker that claims it later sees the final event
    and drops it."""
    client: Any = redis_client()
    key = generation_key(generation_id)
    try:
        client.xadd(key, event_encode("error", error=error, finish_reason="error"), id="0-1")
    except redis.ResponseError:
        return False
    client.expire(key, GENERATION_TTL_S)
    return True


def workers_live_count() -> int:
    """How many inference workers have a fresh heartbeat."""
    return len(heartbeats_read(redis_client(), worker_heartbeat_pattern()))
