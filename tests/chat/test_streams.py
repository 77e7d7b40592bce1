"""The generation follower against the session's real Redis: streams are
written here entry by entry, as a worker writes them, and no worker runs."""

from __future__ import annotations

import uuid

import pytest
from asgiref.sync import sync_to_async

from chat.models import Message
from chat.services.conversations import conversation_create
from chat.services.messages import message_generation_finish, message_send
from chat.streams import CancelPolicy, GenerationFollower, Notice, Reset, Stored, Waiting
from inference.client import StreamBroken
from inference.connection import cancel_key, generation_key
from inference.protocol import StreamEvent, event_encode
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

#: Short enough for quick tests, long enough for a slow machine's reads.
IDLE_S = 0.5


class Stream:
    """One generation's stream, written as a worker writes it."""

    def __init__(self, redis_conn, generation_id: str | None = None) -> None:
        self.redis = redis_conn
        self.generation_id = generation_id or uuid.uuid4().hex
        self.key = generation_key(self.generation_id)

    def add(self, seq: int, kind: str, writer: str = "w1", **data) -> None:
        self.redis.xadd(self.key, {**event_encode(kind, **data), "w": writer}, id=f"0-{seq}")

    def answer(self, *pieces: str, writer: str = "w1", done: bool = True) -> None:
        """A start, one text entry a piece, and the final event."""
        self.add(1, "start", writer, model_version="tiny")
        for seq, piece in enumerate(pieces, start=2):
            self.add(seq, "text", writer, text=piece)
        if done:
            self.add(len(pieces) + 2, "done", writer, finish_reason="stop")

    def cancelled(self) -> bool:
        return bool(self.redis.exists(cancel_key(self.generation_id)))


def _shown(items: list[Notice]) -> list[tuple[int, str]]:
    return [(i.seq, i.text) for i in items if isinstance(i, StreamEvent) and i.type == "text"]


async def _all(follower: GenerationFollower) -> list[Notice]:
    async with follower:
        return [item async for item in follower]


@pytest.fixture
def stream(redis_conn) -> Stream:
    return Stream(redis_conn)


@pytest.fixture
async def pending(redis_conn):
    """A pending chat answer (queued; no worker takes it) and its stream."""

    def make() -> Message:
        user = UserFactory()
        conversation = conversation_create(user=user)
        sent = message_send(
            user=user, conversation=conversation, content="Hi", client_id=uuid.uuid4()
        )
        return sent.answer

    answer = await sync_to_async(make)()
    return answer, Stream(redis_conn, str(answer.generation_id))


# --- replay -------------------------------------------------------------------


async def test_a_follower_replays_after_its_sequence_number_and_ends_with_the_final_event(
    stream,
):
    stream.answer("The ", "parcel ", "left", ".")
    follower = GenerationFollower(stream.generation_id, after_seq=3, idle_timeout_s=IDLE_S)
    items = await _all(follower)
    assert _shown(items) == [(4, "left"), (5, ".")]
    assert isinstance(items[-1], StreamEvent) and items[-1].type == "done"
    assert items[-1].seq == 6


async def test_a_follower_from_zero_reads_every_event_once_as_it_is_written(stream):
    stream.add(1, "queued", position=2)
    follower = GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S)
    async with follower:
        first = await anext(follower)
        assert isinstance(first, StreamEvent) and first.type == "queued"
        stream.add(2, "start", model_version="tiny")
        stream.add(3, "text", text="Hi")
        stream.add(4, "done", finish_reason="stop")
        rest = [item async for item in follower]
    assert [item.seq for item in rest if isinstance(item, StreamEvent)] == [2, 3, 4]


# --- reset --------------------------------------------------------------------


async def test_a_stream_rewritten_by_another_writer_resets_and_replays_from_the_start(stream):
    """Redis lost the tail and a second worker wrote a different one: a
    Reset, then the new stream whole."""
    stream.answer("Red ", "green ", "blue", done=False)
    follower = GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, max_resets=1)
    async with follower:
        before = [await anext(follower) for _ in range(4)]
        assert _shown(before) == [(2, "Red "), (3, "green "), (4, "blue")]
        stream.redis.delete(stream.key)
        stream.add(1, "start", "w1", model_version="tiny")
        stream.add(2, "text", "w1", text="Red ")
        stream.add(3, "start", "w2", model_version="tiny")
        stream.add(4, "text", "w2", text="yellow ")
        stream.add(5, "text", "w2", text="white")
        stream.add(6, "done", "w2", finish_reason="stop")
        after = [item async for item in follower]
    assert isinstance(after[0], Reset)
    assert _shown(after[1:]) == [(2, "Red "), (4, "yellow "), (5, "white")]
    assert isinstance(after[-1], StreamEvent) and after[-1].final


async def test_a_stream_that_keeps_breaking_raises_past_max_resets(stream):
    # Entry 3 is missing: every read from the start breaks at 4.
    stream.add(1, "start", model_version="tiny")
    stream.add(2, "text", text="A")
    stream.add(4, "text", text="C")
    follower = GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, max_resets=1)
    items: list[Notice] = []
    with pytest.raises(StreamBroken):
        async with follower:
            async for item in follower:
                items.append(item)
    assert [type(item).__name__ for item in items] == [
        "StreamEvent", "StreamEvent", "Reset", "StreamEvent", "StreamEvent",
    ]  # fmt: skip
    assert follower.ended and not follower.finished


async def test_past_max_resets_a_follower_with_an_answer_waits_for_it_stored(pending):
    answer, stream = pending
    stream.add(1, "start", model_version="tiny")
    stream.add(2, "text", text="A")
    stream.add(4, "text", text="C")
    follower = GenerationFollower(
        stream.generation_id, idle_timeout_s=IDLE_S, max_resets=0, message_id=answer.pk
    )
    async with follower:
        items = [await anext(follower) for _ in range(3)]
        assert isinstance(items[-1], Reset)
        # Polled, not streamed: the worker's stored answer is what comes.
        await sync_to_async(message_generation_finish)(
            generation_id=stream.generation_id, final={"finish_reason": "stop"}, text="A whole"
        )
        rest = [item async for item in follower]
    assert len(rest) == 1 and isinstance(rest[0], Stored)
    assert rest[0].answer.content == "A whole"


# --- waiting --------------------------------------------------------------------


async def test_an_idle_stream_yields_waiting_and_the_follower_follows_on(stream):
    follower = GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, waiting=True)
    async with follower:
        waiting = await anext(follower)
        assert isinstance(waiting, Waiting)
        assert waiting.workers is not None and waiting.workers >= 0  # Redis answered
        stream.answer("late")
        items = [item async for item in follower]
    assert _shown(items) == [(2, "late")]
    assert follower.finished


async def test_without_waiting_an_idle_stream_raises_timeout(stream):
    follower = GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S)
    with pytest.raises(TimeoutError):
        await _all(follower)
    assert follower.ended and not follower.finished


# --- the stored answer ----------------------------------------------------------


async def test_a_stream_that_is_gone_falls_back_to_the_stored_answer(pending):
    answer, stream = pending
    await sync_to_async(message_generation_finish)(
        generation_id=stream.generation_id, final={"finish_reason": "stop"}, text="Stored text"
    )
    items = await _all(
        GenerationFollower(
            stream.generation_id, idle_timeout_s=IDLE_S, waiting=True, message_id=answer.pk
        )
    )
    assert len(items) == 1 and isinstance(items[0], Stored)
    assert items[0].answer.content == "Stored text"
    assert items[0].answer.status == Message.Status.DONE


async def test_a_pending_answer_without_a_stream_waits_and_a_deleted_one_ends(pending):
    answer, stream = pending
    follower = GenerationFollower(
        stream.generation_id, idle_timeout_s=IDLE_S, waiting=True, message_id=answer.pk
    )
    async with follower:
        assert isinstance(await anext(follower), Waiting)
        await sync_to_async(Message.objects.filter(pk=answer.pk).delete)()
        assert [item async for item in follower] == []
    assert follower.ended and not follower.finished


async def test_after_the_final_event_an_answer_no_worker_stored_is_stored_from_the_stream(
    pending,
):
    answer, stream = pending
    stream.answer("Every ", "piece")
    items = await _all(
        GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, message_id=answer.pk)
    )
    assert isinstance(items[-2], StreamEvent) and items[-2].type == "done"
    stored = items[-1]
    assert isinstance(stored, Stored)
    assert stored.answer.content == "Every piece"
    assert stored.answer.status == Message.Status.DONE


# --- cancel on close --------------------------------------------------------------


async def _left_mid_answer(stream: Stream, policy: CancelPolicy) -> bool:
    """Read the first event of a running answer, close: was it cancelled?"""
    stream.answer("still ", "going", done=False)
    follower = GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, cancel=policy)
    async with follower:
        await anext(follower)
    return stream.cancelled()


async def _read_to_the_end(stream: Stream, policy: CancelPolicy) -> bool:
    stream.answer("all ", "of ", "it")
    await _all(GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, cancel=policy))
    return stream.cancelled()


async def _timed_out(stream: Stream, policy: CancelPolicy) -> bool:
    stream.answer("stuck", done=False)
    with pytest.raises(TimeoutError):
        await _all(GenerationFollower(stream.generation_id, idle_timeout_s=IDLE_S, cancel=policy))
    return stream.cancelled()


@pytest.mark.parametrize(
    ("policy", "left", "read", "timed_out"),
    [
        (CancelPolicy.NEVER, False, False, False),
        (CancelPolicy.IF_LEFT, True, False, False),
        (CancelPolicy.IF_UNFINISHED, True, False, True),
    ],
    ids=["never", "if-left", "if-unfinished"],
)
async def test_closing_cancels_the_generation_as_the_policy_says(
    redis_conn, policy, left, read, timed_out
):
    assert await _left_mid_answer(Stream(redis_conn), policy) is left
    assert await _read_to_the_end(Stream(redis_conn), policy) is read
    assert await _timed_out(Stream(redis_conn), policy) is timed_out


async def test_a_follower_closed_before_reading_cancels_unless_told_never(redis_conn):
    for policy, expected in [
        (CancelPolicy.NEVER, False),
        (CancelPolicy.IF_LEFT, True),
        (CancelPolicy.IF_UNFINISHED, True),
    ]:
        stream = Stream(redis_conn)
        await GenerationFollower(stream.generation_id, cancel=policy).aclose()
        assert stream.cancelled() is expected, policy
