"""Beam search in an engine's rows: gathering each running beam's logits,
moving KV memory as the search branches, and emitting the best beams
whole when it ends. The search itself is ``inference.beam``. No Django
here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from inference.engine_request import Group, Request
from inference.engine_types import Event, FinishReason

if TYPE_CHECKING:
    from inference.engine_base import EngineBase


def beam_accept(
    engine: EngineBase, request: Request, logits: torch.Tensor, events: list[Event]
) -> None:
    """Gather a running beam's logits; once every running beam of the
    group has given its own, take the search a step on."""
    group = request.group
    assert group is not None and group.beam is not None
    beam = group.beam
    if not beam.rows:
        beam.rows = [request]
        beam.start(len(request.prompt))
    beam.gathered[id(request)] = logits
    if len(beam.gathered) < len({id(r) for r in beam.rows}):
        return
    rows = []
    for holder in beam.rows if len(beam.rows) > 1 else beam.rows * beam.beams:
        log_probs = torch.log_softmax(beam.gathered[id(holder)].float(), dim=-1)
        rows.append(engine._penalized(holder, log_probs))
    beam.gathered.clear()
    step = beam.step(torch.stack(rows))
    if step.done:
        beam_finish(engine, group, events)
        return
    beams_move(engine, group, step.parents, step.tokens)


def beams_move(engine: EngineBase, group: Group, parents: list[int], tokens: list[int]) -> None:
    """Give each new beam its row: the first child of a beam keeps its
    parent's row; the others take rows freed by beams without children
    (or not started yet) and a copy of their parent's KV memory."""
    beam = group.beam
    assert beam is not None
    old = beam.rows if len(beam.rows) > 1 else beam.rows * beam.beams
    histories = [list(holder.generated) for holder in old]
    placed: list[Request | None] = [None] * len(parents)
    kept: set[int] = set()
    for j, parent in enumerate(parents):
        holder = old[parent]
        if id(holder) not in kept:
            kept.add(id(holder))
            placed[j] = holder
    distinct = list({id(h): h for h in old}.values())
    free = [h for h in distinct if id(h) not in kept] + beam.spare
    now = engine.clock()
    for j, parent in enumerate(parents):
        if placed[j] is not None:
            continue
        target = free.pop(0)
        source = old[parent]
        if target in beam.spare:
            beam.spare.remove(target)
            target.timings.scheduled = now
            engine._fork_start(source, target)
        else:
            engine._row_copy(source, target)
        placed[j] = target
    for j, (holder, parent, token) in enumerate(zip(placed, parents, tokens, strict=True)):
        assert holder is not None
        holder.generated = histories[parent] + [token]
        holder.last_token = token
        if holder.timings.first_token is None:
            holder.timings.first_token = now
        holder.timings.token_times.append(now)
        placed[j] = holder
    beam.rows = [h for h in placed if h is not None]


def beam_finish(engine: EngineBase, group: Group, events: list[Event]) -> None:
    """Emit the best n finished beams as whole answers (each through
    stop strings and its output filter) and free every row."""
    beam = group.beam
    assert beam is not None
    params = group.primary.params
    best = beam.best(params.n)
    for member in group.members:
        if member.index >= len(best):
            member.cancelled = True
            engine._slot_release(member)
    primary = group.primary
    for member, hypothesis in zip(group.members, best, strict=False):
        member.generated = hypothesis.tokens
        member.timings.first_token = primary.timings.first_token
        member.timings.token_times = list(primary.timings.token_times)
        stops, detok = member.stops, member.detok
        text = ""
        for token in hypothesis.tokens:
            if token in beam.eos_ids:
                break
            text += stops.push(detok.push(token))
            if stops.stopped:
                break
        if not stops.stopped:
            text += stops.push(detok.flush())
        if not stops.stopped:
            text += stops.flush()
        ended = hypothesis.ended or stops.stopped
        reason = FinishReason.STOP if ended else FinishReason.LENGTH
        engine._emit(member, text, events, final=True, reason=reason)
    group.pending.clear()
    beam.spare.clear()
