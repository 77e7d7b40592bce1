"""Benchmark: the engine against transformers ``generate``, in one process.

Same model, dtype, threads and prompts for every system:

- A: ``generate`` one request at a time, in arrival order;
- B: static batching: all requests of a wave padded into one ``generate``;
- C: the engine, all requests submitted at once (or on Poisson arrivals);
- G: the same engine serving the model's GGUF copy on llama.cpp (the
  default model's, or ``--gguf``), the way the worker serves it on a CPU;
- L: llama.cpp alone, one request at a time, greedy in a bare loop with
  no scheduler, sampler or detokenizer: the anchor G is judged against.

Beside those bursts, a closed loop: N users, each sending its next
question as soon as its answer ends, for a fixed time (then what is
running finishes). In A the server takes one request at a time in the
order they were sent; in B the next wave starts when its longest answer
ends, so a user whose answer ended early waits for it; time to first text
counts from when the user sent the question.

Output lengths come from a capped exponential distribution; a share of
prompts is long (~1.5k tokens); in C a share of requests is cancelled
mid-stream. Prints a table and writes JSON under ``var/bench/``. Run with
``make bench`` or ``python -m tools.engine_bench --help``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from inference.detokenize import REPLACEMENT
from inference.engine import Engine
from inference.engine_base import EngineBase
from inference.engine_types import Event
from inference.formats import is_gguf_folder
from inference.llamacpp.engine import LlamaCppEngine
from inference.llamacpp.loading import GGUFModel, gguf_model_load
from inference.llamacpp.runtime import LlamaRuntime
from inference.loading import LoadedModel, model_load, threads_configure
from inference.protocol import SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Explain how a refund works in an online shop.",
    "Write a short poem about the sea.",
    "How do I reset my password?",
    "What are your opening hours on Sunday?",
    "Summarise the benefits of exercise.",
    "Give me three tips for learning Python.",
    "Why is the sky blue?",
]
LONG_TEXT = (
    "Order history. The customer placed several orders over the past year, "
    "including shoes, a winter coat, two books and a set of kitchen knives. "
    "One parcel arrived late and one item was returned for a refund. "
)


@dataclass
class Job:
    prompt: list[int]
    max_new_tokens: int
    cancel_after: int | None = None
    arrival: float = 0.0


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    after_cancel: int = 0
    replacement_chars: int = 0
    short_ttft: list[float] = field(default_factory=list)
    rss_idle_mb: float | None = None
    rss_peak_mb: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "tok_s": round(self.tokens / self.seconds, 2) if self.seconds else 0.0,
            "ttft_p50": _pct(self.ttft, 50),
            "ttft_p99": _pct(self.ttft, 99),
            "short_ttft_p99": _pct(self.short_ttft, 99),
            "itl_p50": _pct(self.itl, 50),
            "itl_p99": _pct(self.itl, 99),
            "tokens_after_cancel": self.after_cancel,
            "replacement_chars": self.replacement_chars,
            "rss_idle_mb": self.rss_idle_mb,
            "rss_peak_mb": self.rss_peak_mb,
        }


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))], 4)


def jobs_make(
    loaded: LoadedModel,
    count: int,
    *,
    mean_tokens: int,
    cap: int,
    long_share: float,
    cancel_share: float,
    long_tokens: int,
    seed: int,
) -> list[Job]:
    rng = random.Random(seed)  # noqa: S311 (workload shape, not secrets)
    tokenizer = loaded.tokenizer
    long_body = (LONG_TEXT * 200)[: long_tokens * 4]
    jobs = []
    for i in range(count):
        is_long = count > 1 and rng.random() < long_share
        question = QUESTIONS[i % len(QUESTIONS)]
        content = f"{long_body}\n\n{question}" if is_long else question
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
            prompt = prompt["input_ids"]
        prompt = list(prompt)[-long_tokens:] if is_long else list(prompt)
        length = max(1, min(cap, int(rng.expovariate(1 / mean_tokens))))
        cancel = length // 2 if length >= 8 and rng.random() < cancel_share else None
        jobs.append(Job(prompt=prompt, max_new_tokens=length, cancel_after=cancel))
    return jobs


class _StepClock(LogitsProcessor):
    """Record when generate produces each token (it calls processors once
    per step, before picking the token)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def _generate(loaded: LoadedModel, prompts: list[list[int]], new_tokens: int) -> list[float]:
    tokenizer = loaded.tokenizer
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=loaded.device)
    mask = torch.tensor(
        [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=loaded.device
    )
    clock = _StepClock()
    loaded.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=pad,
        logits_processor=LogitsProcessorList([clock]),
    )
    return clock.times


def run_hf_sequential(loaded: LoadedModel, jobs: list[Job]) -> Result:
    result = Result()
    start = time.perf_counter()
    for job in jobs:
        times = _generate(loaded, [job.prompt], job.max_new_tokens)
        result.ttft.append(times[0] - start)
        result.itl += [b - a for a, b in itertools.pairwise(times)]
        result.tokens += job.max_new_tokens
        if len(job.prompt) < 200:
            result.short_ttft.append(times[0] - start)
    result.seconds = time.perf_counter() - start
    return result


def run_hf_static(loaded: LoadedModel, jobs: list[Job], batch: int) -> Result:
    result = Result()
    start = time.perf_counter()
    for i in range(0, len(jobs), batch):
        wave = jobs[i : i + batch]
        longest = max(j.max_new_tokens for j in wave)
        times = _generate(loaded, [j.prompt for j in wave], longest)
        for job in wave:
            result.ttft.append(times[0] - start)
            mine = times[: job.max_new_tokens]
            result.itl += [b - a for a, b in itertools.pairwise(mine)]
            if len(job.prompt) < 200:
                result.short_ttft.append(times[0] - start)
        # Only the tokens a request asked for count; padding work is waste.
        result.tokens += sum(j.max_new_tokens for j in wave)
    result.seconds = time.perf_counter() - start
    return result


def run_llamacpp_sequential(gguf: Path, jobs: list[Job], *, threads: int) -> Result:
    """llama.cpp by itself: one request at a time, prompt in one batch,
    then a bare greedy loop (argmax over the logits, nothing else)."""
    longest = max(len(j.prompt) + j.max_new_tokens for j in jobs)
    runtime = LlamaRuntime(
        gguf,
        sequences=1,
        sequence_tokens=longest + 1,
        pool_tokens=longest + 1,
        batch_tokens=512,
        threads=threads,
    )
    result = Result()
    start = time.perf_counter()
    try:
        for job in jobs:
            runtime.sequence_clear(0)
            prompt = job.prompt
            index = 0  # of the token whose logits come next, in the last batch
            for offset in range(0, len(prompt), runtime.batch_tokens):
                chunk = prompt[offset : offset + runtime.batch_tokens]
                last = offset + len(chunk) == len(prompt)
                runtime.decode(
                    [(t, offset + k, 0, last and k == len(chunk) - 1) for k, t in enumerate(chunk)]
                )
                index = len(chunk) - 1
            times = []
            position = len(prompt)
            for _ in range(job.max_new_tokens):
                token = int(np.argmax(runtime.logits(index)))
                times.append(time.perf_counter())
                runtime.decode([(token, position, 0, True)])
                position, index = position + 1, 0
            result.ttft.append(times[0] - start)
            result.itl += [b - a for a, b in itertools.pairwise(times)]
            result.tokens += job.max_new_tokens
            if len(job.prompt) < 200:
                result.short_ttft.append(times[0] - start)
    finally:
        runtime.close()
    result.seconds = time.perf_counter() - start
    return result


def _rss_mb() -> float | None:
    """This process's resident memory in MiB (Linux), or None."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class _EngineRun:
    """The engine under measurement: submits jobs and times their text."""

    def __init__(self, engine: EngineBase) -> None:
        self.engine = engine
        self.result = Result()
        self.jobs: dict[str, Job] = {}
        self.sent_at: dict[str, float] = {}
        self.last_token: dict[str, float] = {}
        # The process's memory with the engine built and nothing running,
        # then its peak while the engine works (sampled every step).
        self.result.rss_idle_mb = self.result.rss_peak_mb = _rss_mb()

    def step(self) -> list[Event]:
        events = self.engine.step()
        rss = _rss_mb()
        if rss is not None:
            self.result.rss_peak_mb = max(rss, self.result.rss_peak_mb or 0.0)
        return events

    def submit(self, request_id: str, job: Job) -> None:
        params = SamplingParams(temperature=0, max_new_tokens=job.max_new_tokens, ignore_eos=True)
        self.engine.submit(request_id, prompt=job.prompt, params=params)
        self.jobs[request_id] = job
        self.sent_at[request_id] = time.perf_counter()

    def measure(self, event: Event) -> None:
        """Time an event's text and count the tokens of a finished one."""
        request_id = event.request_id
        result = self.result
        if event.text:
            stamp = time.perf_counter()
            result.replacement_chars += event.text.count(REPLACEMENT)
            if request_id not in self.last_token:
                ttft = stamp - self.sent_at[request_id]
                result.ttft.append(ttft)
                if len(self.jobs[request_id].prompt) < 200:
                    result.short_ttft.append(ttft)
            else:
                result.itl.append(stamp - self.last_token[request_id])
            self.last_token[request_id] = stamp
        if event.finished:
            result.tokens += event.completion_tokens


EngineFactory = Callable[[int], EngineBase]


def torch_engines(loaded: LoadedModel, *, budget: int, speculative: int = 4) -> EngineFactory:
    """Build torch engines of a given number of slots over loaded."""

    def make(slots: int) -> EngineBase:
        return Engine(
            loaded,
            slots=slots,
            max_context=4096,
            step_token_budget=budget,
            speculative_tokens=speculative,
        )

    return make


def gguf_engines(model: GGUFModel, *, budget: int, threads: int) -> EngineFactory:
    """Build llama.cpp engines of a given number of slots over model."""

    def make(slots: int) -> EngineBase:
        return LlamaCppEngine(
            model, slots=slots, max_context=4096, step_token_budget=budget, threads=threads
        )

    return make


def run_engine(make: EngineFactory, jobs: list[Job], *, slots: int) -> Result:
    run = _EngineRun(make(slots))
    engine, result = run.engine, run.result
    produced: dict[str, int] = {}
    cancelled_at: dict[str, int] = {}
    pending = sorted(enumerate(jobs), key=lambda item: item[1].arrival)
    start = time.perf_counter()
    while pending or engine.has_work():
        now = time.perf_counter() - start
        while pending and pending[0][1].arrival <= now:
            index, job = pending.pop(0)
            run.submit(str(index), job)
            produced[str(index)] = 0
        if not engine.has_work():
            time.sleep(min(0.01, max(pending[0][1].arrival - now, 0)) if pending else 0)
            continue
        for event in run.step():
            request_id = event.request_id
            job = jobs[int(request_id)]
            run.measure(event)
            if event.finished:
                if request_id in cancelled_at:
                    result.after_cancel += event.completion_tokens - cancelled_at[request_id]
            elif job.cancel_after is not None and request_id not in cancelled_at:
                produced[request_id] += 1 if event.text else 0
                if produced[request_id] >= job.cancel_after:
                    engine.cancel(request_id)
                    # Tokens so far; one more step may be in flight already.
                    cancelled_at[request_id] = next(
                        (len(r.generated) for r in engine.decoding if r.id == request_id), 0
                    )
    result.seconds = time.perf_counter() - start
    return result


def closed_loop_queues(
    loaded: LoadedModel, users: int, *, mean_tokens: int, cap: int, long_tokens: int, seed: int
) -> list[list[Job]]:
    """Each user's questions, in order, of varied lengths (repeated when a
    user gets through all of them before the time is up)."""
    per_user = 8
    pool = jobs_make(
        loaded, users * per_user, mean_tokens=mean_tokens, cap=cap, long_share=0.0,
        cancel_share=0.0, long_tokens=long_tokens, seed=seed,
    )  # fmt: skip
    return [pool[user::users] for user in range(users)]


def _answer_times(result: Result, times: list[float], sent: float, prompt: list[int]) -> None:
    result.ttft.append(times[0] - sent)
    if len(prompt) < 200:
        result.short_ttft.append(times[0] - sent)
    result.itl += [b - a for a, b in itertools.pairwise(times)]


def run_hf_sequential_closed(
    loaded: LoadedModel, queues: list[list[Job]], duration: float
) -> Result:
    result = Result()
    start = time.perf_counter()
    users = len(queues)
    sent = [start] * users
    turn = 0
    while turn == 0 or time.perf_counter() - start < duration:
        user = turn % users
        queue = queues[user]
        job = queue[(turn // users) % len(queue)]
        times = _generate(loaded, [job.prompt], job.max_new_tokens)
        _answer_times(result, times, sent[user], job.prompt)
        result.tokens += job.max_new_tokens
        sent[user] = times[-1]
        turn += 1
    result.seconds = time.perf_counter() - start
    return result


def run_hf_static_closed(loaded: LoadedModel, queues: list[list[Job]], duration: float) -> Result:
    result = Result()
    start = time.perf_counter()
    sent = [start] * len(queues)
    wave = 0
    while wave == 0 or time.perf_counter() - start < duration:
        jobs = [queue[wave % len(queue)] for queue in queues]
        longest = max(job.max_new_tokens for job in jobs)
        times = _generate(loaded, [job.prompt for job in jobs], longest)
        for user, job in enumerate(jobs):
            mine = times[: job.max_new_tokens]
            _answer_times(result, mine, sent[user], job.prompt)
            sent[user] = mine[-1]
        result.tokens += sum(job.max_new_tokens for job in jobs)
        wave += 1
    result.seconds = time.perf_counter() - start
    return result


def run_engine_closed(make: EngineFactory, queues: list[list[Job]], duration: float) -> Result:
    run = _EngineRun(make(len(queues)))
    asked = [0] * len(queues)

    def send(user: int) -> None:
        queue = queues[user]
        run.submit(f"{user}-{asked[user]}", queue[asked[user] % len(queue)])
        asked[user] += 1

    start = time.perf_counter()
    for user in range(len(queues)):
        send(user)
    while run.engine.has_work():
        for event in run.step():
            run.measure(event)
            if event.finished and time.perf_counter() - start < duration:
                send(int(event.request_id.split("-")[0]))
    run.result.seconds = time.perf_counter() - start
    return run.result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.conf import settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--concurrency", default="1,4,16,32")
    parser.add_argument("--mean-tokens", type=int, default=128)
    parser.add_argument("--cap", type=int, default=512)
    parser.add_argument("--long-share", type=float, default=0.05)
    parser.add_argument("--long-tokens", type=int, default=1500)
    parser.add_argument("--cancel-share", type=float, default=0.10)
    parser.add_argument("--poisson-rate", type=float, default=0.0, help="requests/s; 0 skips")
    parser.add_argument(
        "--closed-loop", default="32", help="closed-loop users, comma-separated; empty skips"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="closed-loop seconds")
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--speculative-tokens", type=int, default=4, help="0 turns it off")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF version folder for G and L")
    parser.add_argument("--gguf-budget", type=int, default=256, help="step tokens of G")
    parser.add_argument("--skip", default="", help="systems to skip, e.g. A,B,G,L")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    threads_configure(args.threads)
    model_dir = args.model or Path(settings.DEFAULT_MODEL_DIR)
    loaded = model_load(model_dir, device=args.device, dtype=args.dtype)
    skip = {s.strip().upper() for s in args.skip.split(",") if s.strip()}
    engines: dict[str, EngineFactory] = {}
    if "C" not in skip:
        engines["C"] = torch_engines(
            loaded, budget=args.budget, speculative=args.speculative_tokens
        )
    gguf_dir = args.gguf or Path(settings.DEFAULT_MODEL_GGUF_DIR)
    gguf_model = None
    if not {"G", "L"} <= skip and is_gguf_folder(gguf_dir):
        gguf_model = gguf_model_load(gguf_dir)
        if "G" not in skip:
            engines["G"] = gguf_engines(gguf_model, budget=args.gguf_budget, threads=args.threads)
    report: dict[str, Any] = {
        "model": str(model_dir),
        "device": str(loaded.device),
        "dtype": str(loaded.dtype),
        "threads": torch.get_num_threads(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "workloads": {},
    }
    # Warm up kernels so the first system measured is not penalised.
    _generate(loaded, [[1, 2, 3]], 4)
    workloads = [(f"c{n}", int(n)) for n in args.concurrency.split(",") if n.strip()]
    print(f"{'workload':10} {'sys':3} {'tok/s':>8} {'ttft50':>8} {'ttft99':>8} "
          f"{'itl50':>8} {'itl99':>8} {'x/A':>6} {'x/B':>6} {'x/L':>6}")  # fmt: skip
    for name, count in workloads:
        jobs = jobs_make(
            loaded, count, mean_tokens=args.mean_tokens, cap=args.cap,
            long_share=args.long_share, cancel_share=args.cancel_share,
            long_tokens=args.long_tokens, seed=args.seed + count,
        )  # fmt: skip
        plain = [Job(j.prompt, j.max_new_tokens) for j in jobs]
        results: dict[str, Result] = {}
        if "A" not in skip:
            results["A"] = run_hf_sequential(loaded, plain)
        if "B" not in skip:
            results["B"] = run_hf_static(loaded, plain, batch=count)
        if gguf_model is not None and "L" not in skip:
            results["L"] = run_llamacpp_sequential(gguf_model.gguf, plain, threads=args.threads)
        # C and G run the same jobs without cancels for the ratios, then
        # C with them.
        for system, make in engines.items():
            results[system] = run_engine(make, plain, slots=max(count, 1))
        if "C" in engines and any(j.cancel_after for j in jobs):
            results["C+cancel"] = run_engine(engines["C"], jobs, slots=max(count, 1))
        _report_rows(name, results, report)
    for users in (int(n) for n in args.closed_loop.split(",") if n.strip()):
        queues = closed_loop_queues(
            loaded, users, mean_tokens=args.mean_tokens, cap=args.cap,
            long_tokens=args.long_tokens, seed=args.seed + users,
        )  # fmt: skip
        results = {}
        if "A" not in skip:
            results["A"] = run_hf_sequential_closed(loaded, queues, args.duration)
        if "B" not in skip:
            results["B"] = run_hf_static_closed(loaded, queues, args.duration)
        for system, make in engines.items():
            results[system] = run_engine_closed(make, queues, args.duration)
        _report_rows(f"closed{users}", results, report)
    if args.poisson_rate > 0:
        count = 32
        jobs = jobs_make(
            loaded, count, mean_tokens=args.mean_tokens, cap=args.cap,
            long_share=args.long_share, cancel_share=0.0, long_tokens=args.long_tokens,
            seed=args.seed,
        )  # fmt: skip
        rng = random.Random(args.seed)  # noqa: S311
        clock = 0.0
        for job in jobs:
            clock += rng.expovariate(args.poisson_rate)
            job.arrival = clock
        _report_rows(
            "poisson",
            {system: run_engine(make, jobs, slots=32) for system, make in engines.items()},
            report,
        )
    out = args.out or Path(settings.VAR_DIR) / "bench" / f"bench-{int(time.time())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")
    return 0


#: The baselines each engine row is divided by.
BASELINES = ("A", "B", "L", "C")


def _report_rows(name: str, results: dict[str, Result], report: dict[str, Any]) -> None:
    summaries = {system: r.summary() for system, r in results.items()}
    ratios = {
        f"{system}/{base}": round(summaries[system]["tok_s"] / summaries[base]["tok_s"], 2)
        for system in ("C", "G")
        for base in BASELINES
        if system in summaries
        and base in summaries
        and base != system
        and summaries[base]["tok_s"]
        and (system, base) != ("C", "L")
    }
    report["workloads"][name] = {"systems": summaries, "ratios": ratios}
    for system, s in summaries.items():
        extra = ""
        if system in ("C", "G"):
            extra = " " + " ".join(
                f"{ratios.get(f'{system}/{base}', '-'):>6}" for base in BASELINES[:3]
            )
            if system == "G" and "G/C" in ratios:
                extra += f"   G/C {ratios['G/C']}"
        print(
            f"{name:10} {system:3} {s['tok_s']:8.1f} {_fmt(s['ttft_p50'])} {_fmt(s['ttft_p99'])} "
            f"{_fmt(s['itl_p50'])} {_fmt(s['itl_p99'])}{extra}"
        )
        if system == "C+cancel":
            print(f"{'':10}     tokens after cancel: {s['tokens_after_cancel']}  "
                  f"U+FFFD: {s['replacement_chars']}")  # fmt: skip
    for system in ("C", "G"):
        if system not in summaries:
            continue
        summary = summaries[system]
        print(f"{'':10}     {system}: short-prompt TTFT p99 {_fmt(summary['short_ttft_p99'])}, "
              f"process memory idle {summary['rss_idle_mb']} MiB, "
              f"peak {summary['rss_peak_mb']} MiB")  # fmt: skip


def _fmt(value: float | None) -> str:
    return f"{value:8.3f}" if value is not None else f"{'-':>8}"


if __name__ == "__main__":
    raise SystemExit(main())
