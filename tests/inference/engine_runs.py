"""Driving an engine to the end in tests."""

from __future__ import annotations

from inference.engine_base import EngineBase


def run_engine(engine: EngineBase, max_steps: int = 20_000) -> dict[str, list]:
    """Step engine until it has no work; its events by request id."""
    events: dict[str, list] = {}
    for _ in range(max_steps):
        if not engine.has_work():
            break
        for event in engine.step():
            events.setdefault(event.request_id, []).append(event)
    assert not engine.has_work(), "the engine still has work after max_steps"
    return events
