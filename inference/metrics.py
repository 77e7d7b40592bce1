"""Prometheus metrics of the inference workers.

Each worker keeps its own registry (every series labelled with its id)
and stores the text exposition in Redis with its heartbeat. The web's
``/metrics`` merges the live workers' snapshots into one exposition, so a
scrape of any web process sees every worker, wherever it runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class WorkerMetrics:
    def __init__(self, worker_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["worker"]
        self.ttft = Histogram(
            "inference_time_to_first_token_seconds",
            "From submission to the first token.",
            labels, buckets=_WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.itl = Histogram(
            "inference_inter_token_seconds",
            "Gap between consecutive tokens of one generation.",
            labels, buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue = Histogram(
            "inference_queue_seconds",
            "From submission to a free engine slot.",
            labels, buckets=_WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "inference_prompt_tokens", "Prompt tokens processed.", labels, registry=self.registry
        )
        self.generated_tokens = Counter(
            "inference_generated_tokens", "Tokens generated.", labels, registry=self.registry
        )
        self.requests = Counter(
            "inference_requests",
            "Generations ended, by finish reason.",
            [*labels, "finish_reason"],
            registry=self.registry,
        )
        self.running = Gauge(
            "inference_running", "Generations in engine slots.", labels, registry=self.registry
        )
        self.waiting = Gauge(
            "inference_waiting", "Generations waiting for a slot.", labels, registry=self.registry
        )
        self.worker_id = worker_id

    def finished(
        self,
        *,
        finish_reason: str,
        prompt_tokens: int,
        completion_tokens: int,
        timings: dict[str, Any] | None,
        gaps: Iterable[float],
    ) -> None:
        worker = self.worker_id
        self.requests.labels(worker, finish_reason).inc()
        self.prompt_tokens.labels(worker).inc(prompt_tokens)
        self.generated_tokens.labels(worker).inc(completion_tokens)
        if timings:
            if timings.get("ttft_s") is not None:
                self.ttft.labels(worker).observe(timings["ttft_s"])
            if timings.get("queue_s") is not None:
                self.queue.labels(worker).observe(timings["queue_s"])
        histogram = self.itl.labels(worker)
        for gap in gaps:
            histogram.observe(gap)

    def load(self, *, running: int, waiting: int) -> None:
        self.running.labels(self.worker_id).set(running)
        self.waiting.labels(self.worker_id).set(waiting)

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()


class MergedSnapshots:
    """A collector that yields the metric families of several workers'
    expositions, merged by name."""

    def __init__(self, expositions: Iterable[str]) -> None:
        self.expositions = list(expositions)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for text in self.expositions:
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = target
                target.samples.extend(family.samples)
        yield from merged.values()


def merged_exposition(expositions: Iterable[str], *, workers: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedSnapshots(expositions))  # type: ignore[arg-type]
    live = Gauge(
        "inference_workers", "Inference workers with a live heartbeat.", registry=registry
    )
    live.set(workers)
    return generate_latest(registry)
