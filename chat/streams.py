"""Following one generation from the server: what the chat sockets, the
OpenAI-compatible API and the staff compare page read a running answer
through.

``GenerationFollower`` tails the generation's Redis stream from a
sequence number (``inference.client.generation_events``) and adds what a
reader needs around it: a ``Reset`` when the stream stops continuing
what was delivered (everything comes again from seq 1), a ``Waiting``
notice when nothing arrives for a while, the stored answer (``Stored``)
once the generation is over or its stream is gone, and, when the reader
closes it, the generation cancelled or not as its ``CancelPolicy`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType

import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from chat.models import Message
from chat.services.messages import message_generation_finish
from inference.client import (
    REDIS_DOWN,
    StreamBroken,
    StreamUnavailable,
    generation_cancel,
    generation_events,
    generation_replay,
    workers_live_count,
)
from inference.protocol import StreamEvent

logger = logging.getLogger(__name__)

#: Seconds the worker gets to store a final answer before a follower that
#: read the final event stores it from the stream itself.
STORE_GRACE_S = 1.0
#: Seconds between reads of an answer the worker is storing.
STORE_POLL_S = 0.05


class CancelPolicy(enum.Enum):
    """When closing a follower cancels its generation."""

    #: Never: the generation runs on without this reader (a chat page).
    NEVER = "never"
    #: When the reader goes away while the follower still follows: not
    #: after the final event, nor after the follower gave up (a timeout,
    #: a stream that keeps breaking).
    IF_LEFT = "if_left"
    #: Whenever the final event was not read, whatever the reason.
    IF_UNFINISHED = "if_unfinished"


@dataclass(frozen=True)
class Reset:
    """The stream lost events in transit: forget what was delivered; the
    events that follow start again from seq 1."""

    reason: str


@dataclass(frozen=True)
class Waiting:
    """Nothing arrived for the idle timeout; the follower still follows.
    ``workers`` counts the live inference workers; None when Redis is
    unreachable."""

    workers: int | None


@dataclass(frozen=True)
class Stored:
    """The answer as the database holds it, finished; the last notice."""

    answer: Message


Notice = StreamEvent | Reset | Waiting | Stored


# Short reads and one idempotent write: on the database thread the
# sockets use anyway, where ``db_apart`` would open a connection a call.
@database_sync_to_async
def _answer_get(message_id: int) -> Message | None:
    return Message.objects.filter(pk=message_id).first()


@database_sync_to_async
def _store_from_stream(generation_id: str) -> None:
    text, final = generation_replay(generation_id)
    if final is not None:
        message_generation_finish(generation_id=generation_id, final=final.data, text=text)


#: Off the shared thread: Redis retries must not hold up other readers.
_workers_live = sync_to_async(workers_live_count, thread_sensitive=False)


class GenerationFollower:
    """Yield a generation's events after ``after_seq``, ending with the
    final one, and notices (``Reset``, ``Waiting``, ``Stored``) as asked.

    - ``max_resets``: how many times a stream that lost events is read
      again from the start, each announced by a ``Reset``. Past that,
      raise ``StreamBroken``, or with ``message_id``, yield one more
      ``Reset`` and wait for the stored answer instead.
    - ``idle_timeout_s``, ``waiting``: when nothing arrives for that long,
      with ``waiting`` yield ``Waiting`` and follow on; without, raise
      ``TimeoutError`` (``StreamUnavailable`` when Redis was away).
    - ``message_id``: the pending answer the generation writes. After the
      final event, and whenever the stream stays idle, yield ``Stored``
      with the answer once it is no longer pending and stop; stop too
      when the answer is gone. A final event whose answer the worker did
      not store within ``STORE_GRACE_S`` is stored from the stream.
    - ``cancel``: what ``aclose`` (or leaving ``async with``) does to the
      generation.
    """

    def __init__(
        self,
        generation_id: str,
        *,
        after_seq: int = 0,
        idle_timeout_s: float = 300.0,
        waiting: bool = False,
        max_resets: int = 0,
        message_id: int | None = None,
        cancel: CancelPolicy = CancelPolicy.NEVER,
    ) -> None:
        self.generation_id = generation_id
        self.after_seq = after_seq
        self.idle_timeout_s = idle_timeout_s
        self.waiting = waiting
        self.max_resets = max_resets
        self.message_id = message_id
        self.cancel = cancel
        #: The final event or the stored answer was delivered.
        self.finished = False
        #: The follower stopped by itself: finished, gave up or found the
        #: answer gone.
        self.ended = False
        self._closed = False
        self._notices = self._follow()

    def __aiter__(self) -> GenerationFollower:
        return self

    async def __anext__(self) -> Notice:
        try:
            item = await anext(self._notices)
        except (StopAsyncIteration, TimeoutError, StreamBroken):
            self.ended = True
            raise
        if isinstance(item, Stored) or (isinstance(item, StreamEvent) and item.final):
            self.finished = self.ended = True
        return item

    async def __aenter__(self) -> GenerationFollower:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop following, and cancel the generation if the policy says so."""
        if self._closed:
            return
        self._closed = True
        if self._cancel_due():
            try:
                # At once, before any await: the slot frees within a step.
                generation_cancel(self.generation_id)
            except redis.RedisError as error:
                logger.warning("Could not cancel generation %s: %s", self.generation_id, error)
        await self._notices.aclose()

    def _cancel_due(self) -> bool:
        if self.cancel is CancelPolicy.IF_LEFT:
            return not self.ended
        if self.cancel is CancelPolicy.IF_UNFINISHED:
            return not self.finished
        return False

    async def _follow(self) -> AsyncGenerator[Notice, None]:
        after, resets = self.after_seq, 0
        while True:
            outcome: Reset | TimeoutError
            if resets > self.max_resets:
                # The stream keeps breaking: poll the stored answer.
                await asyncio.sleep(self.idle_timeout_s / 5)
                outcome = TimeoutError("waiting for the stored answer")
            else:
                events = generation_events(
                    self.generation_id, after_seq=after, idle_timeout_s=self.idle_timeout_s
                )
                try:
                    async with contextlib.aclosing(events):
                        async for event in events:
                            after = event.seq
                            yield event
                            if event.final:
                                stored = await self._stored_after_final()
                                if stored is not None:
                                    yield stored
                                return
                    return  # unreachable: the events end with a final one
                except StreamBroken as broken:
                    resets += 1
                    if resets > self.max_resets and self.message_id is None:
                        raise
                    logger.warning("Generation %s: %s; replaying it", self.generation_id, broken)
                    after = 0
                    outcome = Reset(str(broken))
                except TimeoutError as idle:
                    outcome = idle
            if isinstance(outcome, Reset):
                yield outcome
                continue
            if self.message_id is not None:
                answer = await _answer_get(self.message_id)
                if answer is None:
                    return
                if answer.status != Message.Status.PENDING:
                    yield Stored(answer)
                    return
            if not self.waiting:
                raise outcome
            yield Waiting(workers=await self._workers(outcome))

    async def _stored_after_final(self) -> Stored | None:
        """The answer once the worker stored it; past the grace period,
        stored from the stream here (the worker's database was away)."""
        if self.message_id is None:
            return None
        deadline = time.monotonic() + STORE_GRACE_S
        answer = await _answer_get(self.message_id)
        while answer is not None and answer.status == Message.Status.PENDING:
            if time.monotonic() > deadline:
                # The stream holds every piece.
                await _store_from_stream(self.generation_id)
                answer = await _answer_get(self.message_id)
                break
            await asyncio.sleep(STORE_POLL_S)
            answer = await _answer_get(self.message_id)
        return Stored(answer) if answer is not None else None

    @staticmethod
    async def _workers(idle: TimeoutError) -> int | None:
        if isinstance(idle, StreamUnavailable):
            return None
        try:
            return await _workers_live()
        except REDIS_DOWN:
            return None
