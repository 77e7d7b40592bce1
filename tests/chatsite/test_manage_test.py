"""``python manage.py test`` runs the same pytest suite."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_manage_py_test_runs_the_pytest_suite(tmp_path):
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "test",
            "tests/chatsite/test_settings.py::test_defaults_are_the_embedded_default",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_manage_py_test_fails_when_a_test_fails(tmp_path):
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails():\n    assert 1 == 2\n")
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var")}
    result = subprocess.run(
        [sys.executable, "manage.py", "test", str(failing)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode != 0
    assert "1 failed" in result.stdout
