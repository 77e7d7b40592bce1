"""What ``chat`` (and the API) call to run generations on the workers.

``generation_submit`` validates and queues a request; call it after the
database commit that stores the pending answer (``transaction.on_commit``).
``generation_events`` tails a generation's stream from a sequence number
and ends after the final event, so a reader that reconnects with the last
number it delivered sees nothing twice and misses nothing.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from inference.connection import (
    cancel_key,
    generation_key,
    redis_client,
    requests_stream_key,
    worker_heartbeat_pattern,
)
from inference.protocol import StreamEvent, event_decode
from inference.sampling import SamplingParams

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
) -> str:
    """Queue a generation and return its id. Raise SamplingError for bad
    parameters; the request itself is checked by the worker."""
    SamplingParams.from_dict(params)
    generation_id = generation_id or uuid.uuid4().hex
    payload = {
        "id": generation_id,
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


def generation_events_sync(
    generation_id: str, *, after_seq: int = 0, timeout_s: float = 300.0
) -> Iterator[StreamEvent]:
    """Blocking reader, for commands and tests. Raise TimeoutError when
    nothing arrives for timeout_s."""
    client: Any = redis_client()
    key = generation_key(generation_id)
    last = f"0-{after_seq}"
    idle_since = time.monotonic()
    while True:
        # Short blocks stay under the client's socket timeout.
        response = client.xread({key: last}, block=1000, count=100)
        if not response:
            if time.monotonic() - idle_since > timeout_s:
                raise TimeoutError(f"no event for generation {generation_id} in {timeout_s}s")
            continue
        idle_since = time.monotonic()
        for event in _events(response):
            last = f"0-{event.seq}"
            yield event
            if event.final:
                return


async def generation_events(
    generation_id: str, *, after_seq: int = 0, idle_timeout_s: float = 300.0
) -> AsyncIterator[StreamEvent]:
    """Yield the events of a generation after after_seq, ending with the
    final one. Raise TimeoutError when nothing arrives for idle_timeout_s."""
    # One connection per reader: asyncio connections belong to one loop.
    client: Any = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    key = generation_key(generation_id)
    last = f"0-{after_seq}"
    try:
        while True:
            response = await client.xread({key: last}, block=int(idle_timeout_s * 1000), count=100)
            if not response:
                raise TimeoutError(f"no event for generation {generation_id} in {idle_timeout_s}s")
            for event in _events(response):
                last = f"0-{event.seq}"
                yield event
                if event.final:
                    return
    finally:
        await client.aclose()


def generation_replay(generation_id: str) -> tuple[str, StreamEvent | None]:
    """Return the text streamed so far and the final event, if any, read
    back from the generation's stream."""
    client: Any = redis_client()
    entries = client.xrange(generation_key(generation_id), "-", "+")
    events = [event_decode(entry_id, fields) for entry_id, fields in entries]
    final = events[-1] if events and events[-1].final else None
    return "".join(event.text for event in events), final


def workers_live_count() -> int:
    """How many inference workers have a fresh heartbeat."""
    return len(list(redis_client().scan_iter(match=worker_heartbeat_pattern(), count=200)))
