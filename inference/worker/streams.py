"""Writing a generation's events to its own Redis stream.

Every event is logged with its sequence number before it is written, so a
failed write loses nothing: the events wait in the log while Redis is
away and are written, in order, once it is back. A write lands only if
the stream still ends where this writer left it, all or nothing (a Lua
script); when it does not, another worker has taken the generation over
or Redis lost the stream's tail, and ``StreamWriter.resync`` tells which.
"""

from __future__ import annotations

import bisect
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from inference.protocol import FINAL_TYPES, event_decode, event_encode, seq_of
from inference.worker.link import REDIS_DOWN, RedisLink

if TYPE_CHECKING:
    from inference.worker.versions import VersionSpec

logger = logging.getLogger(__name__)

#: Append events to a generation's stream only if its last entry is the one
#: the writer last wrote (ARGV[1]), or rewrite the whole stream (ARGV[2] =
#: "rewrite") if its last entry is still ARGV[1]; all or nothing. Returns
#: {"ok"} or {"moved", top}. ARGV[3] is the TTL; then seq, event, writer.
_STREAM_WRITE = """
local top = 0
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then top = tonumber(string.match(last[1][1], '%-(%d+)$')) end
if top ~= tonumber(ARGV[1]) then return {'moved', top} end
if ARGV[2] == 'rewrite' then redis.call('DEL', KEYS[1]) end
for i = 4, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'event', ARGV[i + 1], 'w', ARGV[i + 2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {'ok', 0}
"""


@dataclass
class Inflight:
    """A generation this worker runs, with the log of its stream."""

    generation_id: str
    entry_id: str
    version: VersionSpec
    next_seq: int
    text: list[str] = field(default_factory=list)
    position: int | None = None
    output_filter: Any = None
    #: With n answers: one output filter per answer (the first is
    #: ``output_filter``) and the final event of each answer ended so far.
    output_filters: list[Any] = field(default_factory=list)
    choices: int = 1
    ends: dict[int, Any] = field(default_factory=dict)
    #: A chat answer's tokens with their log-probabilities: stored with it
    #: (``tokens`` in its final event).
    tokens: list[Any] = field(default_factory=list)
    tokens_kept: bool = False
    #: This worker's mark on the events it writes (field ``w``).
    writer: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: Every event of the stream, earlier workers' included: (seq, fields).
    log: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: The highest sequence number known to be in Redis.
    published: int = 0
    #: The first sequence number this worker writes.
    first_own: int = 1
    #: Seconds between the request's arrival in the requests stream and
    #: this worker starting it (waiting for a free slot, or a worker).
    claim_wait_s: float | None = None

    @property
    def unpublished(self) -> list[tuple[int, dict[str, str]]]:
        start = bisect.bisect_right(self.log, self.published, key=lambda entry: entry[0])
        return self.log[start:]

    @property
    def final_logged(self) -> bool:
        if not self.log:
            return False
        return json.loads(self.log[-1][1]["event"]).get("type") in FINAL_TYPES


class StreamWriter:
    """Writes generations' events; on_taken is called with a generation
    that another worker has taken over, which this worker must drop."""

    def __init__(self, link: RedisLink, *, on_taken: Callable[[Inflight], None]) -> None:
        self.link = link
        self._on_taken = on_taken
        self._script = link.redis.register_script(_STREAM_WRITE)

    def resume(
        self, generation_id: str, entry_id: str, version: VersionSpec
    ) -> tuple[Inflight, str] | None:
        """Read what earlier workers wrote to a generation's stream. Return
        an item that continues it, with the text streamed so far, or None
        when the stream has ended."""
        key = self.link.keys.generation(generation_id)
        previous = self.link.redis.xrange(key, "-", "+")
        events = [event_decode(eid, f) for eid, f in previous]
        if events and events[-1].final:
            return None
        next_seq = (events[-1].seq + 1) if events else 1
        item = Inflight(
            generation_id,
            entry_id,
            version,
            next_seq,
            log=[(seq_of(eid), dict(f)) for eid, f in previous],
            published=next_seq - 1,
            first_own=next_seq,
        )
        return item, "".join(e.text for e in events)

    def publish(self, item: Inflight, event_type: str, **data: Any) -> bool:
        """Log one event with the next sequence number and write it (with
        any the stream still lacks). Return False when another worker has
        taken the generation over."""
        fields = event_encode(event_type, **data)
        fields["w"] = item.writer
        item.log.append((item.next_seq, fields))
        item.next_seq += 1
        return self.flush(item)

    def flush(self, item: Inflight) -> bool:
        """Write the logged events Redis lacks, in order. While Redis is
        away they wait in the log; return False only when another worker
        owns the stream."""
        pending = item.unpublished
        if not pending or self.link.lost:
            return True
        try:
            moved = self.write(item, pending, expected=item.published)
            if moved is not None:
                # The stream is not where this worker left it: another
                # worker wrote to it, or Redis lost or rewrote its tail.
                return self.resync(item) >= 0
        except redis.ResponseError as exc:
            # Out of memory, read-only, a failed append-only file: an outage
            # as far as this worker is concerned; the events wait.
            self.link.lost_mark(exc)
            return True
        except REDIS_DOWN as exc:
            self.link.lost_mark(exc)
            return True
        item.published = pending[-1][0]
        return True

    def write(
        self,
        item: Inflight,
        entries: list[tuple[int, dict[str, str]]],
        *,
        expected: int,
        rewrite: bool = False,
    ) -> int | None:
        """Write entries if the stream still ends at expected (all or
        nothing); return None, or the sequence number it ends at."""
        keys = self.link.keys
        ttl = keys.generation_ttl_s if item.final_logged else keys.generation_idle_ttl_s
        args: list[Any] = [expected, "rewrite" if rewrite else "append", ttl]
        for seq, fields in entries:
            args += [seq, fields["event"], fields.get("w", "")]
        status, top = self._script(keys=[keys.generation(item.generation_id)], args=args)
        return None if status == "ok" else int(top)

    def resync(self, item: Inflight) -> int:
        """Rewrite the events of item's stream that Redis lacks; drop the
        item when another worker has written past it. Return how many
        were written, or -1 when it was dropped."""
        client = self.link.redis
        key = self.link.keys.generation(item.generation_id)
        last = client.xrevrange(key, "+", "-", count=1)
        last_seq = seq_of(last[0][0]) if last else 0
        foreign = bool(last) and last[0][1].get("w") != item.writer
        foreign_final = foreign and event_decode(*last[0]).final
        taken = foreign and (last_seq >= item.first_own or foreign_final)
        if last_seq >= item.next_seq or taken:
            logger.warning("Generation %s continued elsewhere meanwhile", item.generation_id)
            self._on_taken(item)
            return -1
        whole = last_seq == 0 or int(client.xlen(key)) == last_seq
        if whole:
            item.published = last_seq
            entries, rewrite = item.unpublished, False
        else:
            # A hole (Redis lost entries under later ones): write the whole
            # stream again from the log, which holds every event.
            entries, rewrite = item.log, True
        if not entries:
            return 0
        moved = self.write(item, entries, expected=last_seq, rewrite=rewrite)
        if moved is not None:
            return self.resync(item)  # it moved again meanwhile
        item.published = entries[-1][0]
        return len(entries)
