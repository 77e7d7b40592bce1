"""Redis restarted under running streams: a private redis-server is killed
and started again while a worker generates and a reader tails; nothing is
lost or repeated, and what cannot be continued ends with an error."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.utils import timezone

from chat.models import Conversation, Message
from chat.services.messages import LOST_REQUEST_ERROR
from inference.client import (
    StreamBroken,
    generation_cancel,
    generation_events,
    generation_events_sync,
    generation_submit,
)
from inference.connection import generation_key
from inference.protocol import event_encode
from inference.worker.heartbeat import WorkerState
from inference.worker.loop import InferenceWorker
from inference.worker.versions import VersionSpec
from inference.worker.wiring import requests_lost_end
from tests.conftest import RestartableRedis, wait_for, worker_make
from tests.factories import UserFactory

LONG = {"temperature": 0, "max_new_tokens": 800}


@pytest.fixture
def server(restartable_redis):
    return restartable_redis


@pytest.fixture
def run_worker(server, tiny_model_dir):
    """A worker thread on the private server, recording what it stores."""
    started: list[tuple[InferenceWorker, threading.Thread]] = []

    def start(**options) -> tuple[InferenceWorker, dict]:
        stored: dict = {}
        client = redis.Redis.from_url(
            server.redis.url, decode_responses=True, socket_timeout=5, socket_connect_timeout=1
        )
        worker = worker_make(
            client,
            lambda: VersionSpec(1, "tiny", tiny_model_dir),
            on_finished=lambda gid, final, text: stored.__setitem__(gid, (final, text)),
            **options,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        wait_for(lambda: worker.state == WorkerState.READY)
        return worker, stored

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=30)


def _ask() -> list[dict[str, str]]:
    return [{"role": "user", "content": "Tell me a long story"}]


async def _read(generation_id: str, texts_before_kill: int, kill) -> list:
    """Tail a generation; call kill() once texts_before_kill pieces came."""
    events = []
    killed = False
    async for event in generation_events(generation_id, idle_timeout_s=60):
        events.append(event)
        if not killed and sum(1 for e in events if e.type == "text") >= texts_before_kill:
            killed = True
            await asyncio.to_thread(kill)
    assert killed, "the answer ended before Redis could be restarted"
    return events


def _restart(server: RestartableRedis, *, lose_data: bool, worker: InferenceWorker):
    def kill() -> None:
        server.kill(lose_data=lose_data)
        # The worker keeps generating while Redis is away.
        wait_for(lambda: worker.link.lost, timeout=30)
        server.start()

    return kill


def _assert_whole(events: list, stored_text: str) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "no gap, no repeat"
    assert events[-1].type == "done"
    assert "".join(e.text for e in events) == stored_text


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lose_data", [False, True], ids=["kept-data", "lost-data"])
async def test_a_redis_restart_mid_stream_loses_and_repeats_nothing(server, run_worker, lose_data):
    worker, stored = run_worker(slots=2)
    generation_id = generation_submit(messages=_ask(), params=LONG)
    kill = _restart(server, lose_data=lose_data, worker=worker)
    events = await _read(generation_id, 20, kill)

    wait_for(lambda: generation_id in stored)
    final, text = stored[generation_id]
    assert final["finish_reason"] == "length"
    _assert_whole(events, text)
    # The stream in Redis is whole too: a page reloaded now replays it all.
    replayed = list(generation_events_sync(generation_id, timeout_s=10))
    assert [e.seq for e in replayed] == [e.seq for e in events]
    assert "".join(e.text for e in replayed) == text
    # The worker still claims new work on the restarted server.
    later = generation_submit(messages=_ask(), params={"temperature": 0, "max_new_tokens": 8})
    assert list(generation_events_sync(later, timeout_s=60))[-1].type == "done"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_request_lost_with_redis_data_ends_with_an_error(server, run_worker, monkeypatch):
    monkeypatch.setattr("inference.worker.recovery.RESTART_SETTLE_S", 0.5)
    worker, stored = run_worker(slots=1, on_redis_restart=requests_lost_end)
    user = UserFactory()
    conversation = Conversation.objects.create(user=user, title="lost")
    running = generation_submit(messages=_ask(), params=LONG)
    wait_for(lambda: running in worker.inflight)
    # A second answer waits in the queue behind the running one (capacity
    # counts one queued request per slot): fill it, then one more.
    queued = [generation_submit(messages=_ask(), params=LONG) for _ in range(2)]
    answers = [
        Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.PENDING,
            generation_id=generation_id,
        )
        for generation_id in queued
    ]
    Message.objects.filter(pk__in=[a.pk for a in answers]).update(
        created_at=timezone.now() - timedelta(minutes=1)
    )
    waiting = queued[-1]
    assert waiting not in worker.inflight

    server.kill(lose_data=True)
    wait_for(lambda: worker.link.lost, timeout=30)
    server.start()

    # The running answer completes; the one Redis forgot ends with a
    # clear error instead of waiting forever, and its readers hear it.
    wait_for(lambda: running in stored, timeout=120)
    lost = Message.objects.get(generation_id=waiting)
    wait_for(lambda: Message.objects.get(pk=lost.pk).status != Message.Status.PENDING)
    lost.refresh_from_db()
    assert lost.status == Message.Status.ERROR
    assert lost.error == LOST_REQUEST_ERROR
    events = list(generation_events_sync(waiting, timeout_s=10))
    assert events[-1].type == "error"
    for generation_id in queued:
        generation_cancel(generation_id)


async def test_a_reader_notices_a_stream_rewritten_after_a_loss(redis_conn):
    """Redis lost the stream's tail and another worker continued from what
    was left: the reader must not splice the two answers together."""
    generation_id = "rewritten-" + timezone.now().strftime("%H%M%S%f")
    key = generation_key(generation_id)

    def write(seq: int, text: str, writer: str) -> None:
        fields = event_encode("text", text=text)
        fields["w"] = writer
        redis_conn.xadd(key, fields, id=f"0-{seq}")

    for seq in range(1, 6):
        write(seq, f"a{seq} ", "first")
    seen = []
    with pytest.raises(StreamBroken):
        async for event in generation_events(generation_id, idle_timeout_s=10):
            seen.append(event.seq)
            if event.seq == 5:
                # Lost: 4 and 5. A new worker continues after 3.
                redis_conn.delete(key)
                for seq in range(1, 4):
                    write(seq, f"a{seq} ", "first")
                for seq in range(4, 8):
                    write(seq, f"b{seq} ", "second")
    assert seen == [1, 2, 3, 4, 5]
    redis_conn.delete(key)


async def test_a_reader_follows_a_worker_that_took_over(redis_conn):
    """A new writer that kept every earlier event is a takeover, not a
    loss: the reader goes on."""
    generation_id = "takeover-" + timezone.now().strftime("%H%M%S%f")
    key = generation_key(generation_id)
    for seq in range(1, 4):
        redis_conn.xadd(key, {**event_encode("text", text=f"{seq}"), "w": "first"}, id=f"0-{seq}")
    for seq in range(4, 6):
        redis_conn.xadd(key, {**event_encode("text", text=f"{seq}"), "w": "second"}, id=f"0-{seq}")
    redis_conn.xadd(key, {**event_encode("done", finish_reason="stop"), "w": "second"}, id="0-6")
    events = [event async for event in generation_events(generation_id, idle_timeout_s=10)]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert json.loads(json.dumps([e.text for e in events])) == ["1", "2", "3", "4", "5", ""]
    redis_conn.delete(key)


# --- the worker's stream writes, driven directly --------------------------


def _writer(redis_conn):
    from inference.worker.streams import Inflight

    worker = worker_make(redis_conn, lambda: None)

    def item(generation_id: str, **fields) -> Inflight:
        made = Inflight(generation_id, "0-1", VersionSpec(1, "tiny", Path()), 1, **fields)
        worker.inflight[generation_id] = made
        return made

    return worker, item


def _lose(redis_conn, generation_id: str, *seqs: int) -> None:
    """Drop entries as a Redis restart does: the stream comes back as if
    they had never been written (XDEL alone keeps the last id)."""
    key = generation_key(generation_id)
    entries = redis_conn.xrange(key, "-", "+")
    kept = [(e, f) for e, f in entries if int(e.split("-")[1]) not in seqs]
    redis_conn.delete(key)
    for entry_id, fields in kept:
        redis_conn.xadd(key, fields, id=entry_id)


def _stream(redis_conn, generation_id: str) -> list:
    from inference.protocol import event_decode

    entries = redis_conn.xrange(generation_key(generation_id), "-", "+")
    return [event_decode(entry_id, fields) for entry_id, fields in entries]


def test_a_stream_that_lost_its_tail_is_written_again_before_the_next_event(redis_conn):
    """Redis came back without the last events (a quick restart that the
    client's retries hid): the next write notices and restores them."""
    worker, item = _writer(redis_conn)
    generation_id = "tail-" + uuid.uuid4().hex
    running = item(generation_id)
    for n in range(1, 6):
        assert worker.generations.streams.publish(running, "text", text=f"{n} ")
    _lose(redis_conn, generation_id, 4, 5)
    assert worker.generations.streams.publish(running, "text", text="6 ")
    events = _stream(redis_conn, generation_id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert "".join(e.text for e in events) == "1 2 3 4 5 6 "
    redis_conn.delete(generation_key(generation_id))


def test_a_hole_in_a_stream_is_filled_from_the_worker_s_log(redis_conn):
    worker, item = _writer(redis_conn)
    generation_id = "hole-" + uuid.uuid4().hex
    running = item(generation_id)
    for n in range(1, 6):
        worker.generations.streams.publish(running, "text", text=f"{n} ")
    _lose(redis_conn, generation_id, 3)
    assert worker.generations.streams.resync(running) == 5
    events = _stream(redis_conn, generation_id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert "".join(e.text for e in events) == "1 2 3 4 5 "
    redis_conn.delete(generation_key(generation_id))


def test_a_worker_whose_answer_another_continued_drops_it_without_splicing(redis_conn):
    """Two workers believe they own one answer (one was taken for dead):
    the first to write after the other's last event keeps it, all or
    nothing, and the other stops."""
    first, first_item = _writer(redis_conn)
    second, second_item = _writer(redis_conn)
    generation_id = "both-" + uuid.uuid4().hex
    a = first_item(generation_id)
    for n in range(1, 4):
        first.generations.streams.publish(a, "text", text=f"a{n} ")
    # The second continues from what it read (seq 1-3).
    log = [(seq, fields) for seq, fields in a.log]
    b = second_item(generation_id, log=log, published=3, first_own=4)
    b.next_seq = 4
    assert second.generations.streams.publish(b, "start", model_version="tiny")
    assert second.generations.streams.publish(b, "text", text="b5 ")
    # The first still holds events it generated meanwhile.
    assert not first.generations.streams.publish(a, "text", text="a4 ")
    assert generation_id not in first.inflight
    events = _stream(redis_conn, generation_id)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.text for e in events] == ["a1 ", "a2 ", "a3 ", "", "b5 "]
    redis_conn.delete(generation_key(generation_id))


def test_a_recovered_worker_does_not_write_after_an_error_that_ended_the_answer(redis_conn):
    """A restart recovery ended an answer it took for lost; the worker
    that comes back late with events for it drops them."""
    worker, item = _writer(redis_conn)
    generation_id = "ended-" + uuid.uuid4().hex
    running = item(generation_id, first_own=3, published=0)
    running.next_seq = 3
    running.log = [
        (1, {**event_encode("start", model_version="tiny"), "w": "earlier"}),
        (2, {**event_encode("text", text="Hi"), "w": "earlier"}),
    ]
    worker.generations.streams.publish(running, "text", text=" there")  # Redis had lost it all
    redis_conn.delete(generation_key(generation_id))
    redis_conn.xadd(
        generation_key(generation_id),
        {**event_encode("error", error="lost", finish_reason="error")},
        id="0-1",
    )
    running.published = 3
    assert not worker.generations.streams.publish(running, "text", text="!")
    events = _stream(redis_conn, generation_id)
    assert [e.type for e in events] == ["error"]
    redis_conn.delete(generation_key(generation_id))


def test_a_request_claimed_as_redis_went_away_starts_once_it_is_back(server):
    """Redis failed between claiming a request and reading its stream: the
    request stays this worker's and starts when Redis answers again."""
    client = redis.Redis.from_url(server.redis.url, decode_responses=True, socket_timeout=5)
    worker = worker_make(client, lambda: None)
    worker.claims.group_ensure()
    generation_id = generation_submit(messages=_ask(), params={"max_new_tokens": 4})
    response = client.xreadgroup(
        worker.link.keys.group, worker.worker_id, {worker.link.keys.requests: ">"}, count=1
    )
    [(entry_id, fields)] = response[0][1]
    server.kill(lose_data=False)
    worker.generations.start(entry_id, fields)
    assert worker.link.lost and worker.generations.unstarted == [(entry_id, fields)]
    server.start()
    assert worker.recovery.check()
    # No model is loaded, so it starts and at once ends with an error
    # event, which readers see, and the request is acknowledged.
    events = list(generation_events_sync(generation_id, timeout_s=10))
    assert [e.type for e in events] == ["error"]
    assert "no model version is loaded" in events[0].data["error"]
    assert worker.generations.unstarted == []
    assert client.xlen(worker.link.keys.requests) == 0
