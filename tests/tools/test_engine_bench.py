"""The benchmark runs every system and writes its report."""

from __future__ import annotations

import json

from inference.llamacpp.export import gguf_folder_build
from tools import engine_bench


def test_the_benchmark_reports_every_system_with_ratios(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    gguf = gguf_folder_build(tiny_model_dir, tmp_path / "tiny-gguf", quantization="f16")
    code = engine_bench.main(
        [
            "--model", str(tiny_model_dir), "--dtype", "float32", "--device", "cpu",
            "--gguf", str(gguf), "--threads", "1",
            "--concurrency", "1,3", "--mean-tokens", "8", "--cap", "16",
            "--long-tokens", "64", "--cancel-share", "1.0", "--poisson-rate", "50",
            "--closed-loop", "2", "--duration", "0.5",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["workloads"]) == {"c1", "c3", "closed2", "poisson"}
    c3 = report["workloads"]["c3"]
    assert set(c3["systems"]) >= {"A", "B", "C", "G", "L"}
    for ratio in ("C/A", "C/B", "G/A", "G/B", "G/L", "G/C"):
        assert c3["ratios"][ratio] > 0
    for workload in report["workloads"].values():
        for summary in workload["systems"].values():
            assert summary["replacement_chars"] == 0
            assert summary["tokens"] > 0
    engine = c3["systems"]["C"]
    assert 0 < engine["rss_idle_mb"] <= engine["rss_peak_mb"]
    closed = report["workloads"]["closed2"]
    assert set(closed["systems"]) == {"A", "B", "C", "G"}
    for summary in closed["systems"].values():
        assert summary["tokens"] > 0
        assert summary["ttft_p50"] is not None
    cancelled = c3["systems"].get("C+cancel")
    if cancelled is not None:
        # At most the one step already in flight when the cancel arrived.
        assert cancelled["tokens_after_cancel"] <= 3
