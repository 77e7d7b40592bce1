"""The soak script (``make soak``) against a stack of its own, small."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_soak_streams_every_answer_whole_and_keeps_idle_sockets_open(
    tmp_path, default_model_dir, tiny_model_dir
):
    """A small soak exits 0: no error frame, no lost or repeated event, the
    streamed text is the stored answer, every idle socket stays open, and
    the stack it started stops cleanly."""
    report_path = tmp_path / "soak.json"
    command = [sys.executable, "-m", "tools.soak", "--idle", "20", "--streams", "4"]
    command += ["--max-tokens", "8", "--duration", "3", "--json", str(report_path)]
    if default_model_dir is None:
        # Without the default model there is no tokenizer to build on.
        command += ["--model", str(tiny_model_dir)]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=540, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]

    report = json.loads(report_path.read_text())
    assert report["ok"], output[-6000:]
    assert report["chats_finished"] >= 4
    assert report["chats_finished"] == report["chats_sent"]
    assert all(value == 0 for value in report["counts"].values()), report["counts"]
    assert report["idle_open_at_end"] == 20
    assert report["stack_stop"]["exit_code"] == 0
    assert report["stack_stop"]["left_running"] == []
    # Time to first text is split into its parts: waiting for a slot, the
    # engine, and the rest (web, Redis, this client).
    for part in ("claim_wait_ms", "engine_ttft_ms", "web_path_ms"):
        assert report[part]["p50"] is not None, part
    assert "RESULT: PASS" in result.stdout
