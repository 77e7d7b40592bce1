"""The launcher and the embedded Redis start and stop cleanly; the
launcher starts again whatever dies while it runs."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import redis

from chatsite.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from tests.conftest import REPO_ROOT, free_port, wait_for


def _launcher(tmp_path, *args: str, **env: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WEB_PORT")}
    clean.update(VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    clean.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "chatsite.launcher", *args],
        cwd=REPO_ROOT,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_embedded_redis_starts_answers_and_stops_with_no_process_left(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    pid = server.pid
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.set("k", "v")
    client.close()
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not server.socket_path.exists()


def test_embedded_redis_refuses_a_second_server_on_the_same_socket(tmp_path):
    with (
        EmbeddedRedis(tmp_path / "redis"),
        pytest.raises(EmbeddedRedisError, match="already answers"),
    ):
        EmbeddedRedis(tmp_path / "redis").start()


def test_embedded_redis_replaces_a_stale_socket_file(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(directory / "redis.sock"))
    stale.close()  # the file stays, nothing listens
    with EmbeddedRedis(directory) as server:
        assert redis.Redis.from_url(server.url).ping()


def test_embedded_redis_dies_with_a_killed_parent(tmp_path):
    code = (
        "import sys, time\n"
        "from chatsite.embedded_redis import EmbeddedRedis\n"
        f"s = EmbeddedRedis({str(tmp_path / 'redis')!r}); s.start()\n"
        "print(s.pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and psutil.pid_exists(pid):
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_port_in_use_is_a_one_line_error_naming_the_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = _launcher(tmp_path, WEB_PORT=str(port))
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert f"port {port}" in lines[0] and "already in use" in lines[0]
    assert not (tmp_path / "var" / "redis" / "redis.sock").exists()


def test_unreachable_redis_url_is_a_one_line_error_naming_the_url(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    process = _launcher(tmp_path, REDIS_URL=url, WEB_PORT=str(free_port()))
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert url in lines[0]


@pytest.mark.parametrize(
    ("to_group", "signum"),
    [(True, signal.SIGINT), (False, signal.SIGINT), (False, signal.SIGTERM)],
    ids=["ctrl-c", "sigint-to-launcher", "sigterm-to-launcher"],
)
def test_a_stop_signal_stops_every_process_and_the_embedded_redis(tmp_path, to_group, signum):
    """Ctrl-C in a terminal signals the whole group; a process manager may
    signal the launcher alone. Either way nothing is left running."""
    procfile = tmp_path / "Procfile"
    announce = (
        "import os, time; print('REDIS', os.environ['REDIS_URL'], flush=True); time.sleep(600)"
    )
    procfile.write_text(f'one: python -c "{announce}"\ntwo: sleep 600\n')
    process = _launcher(tmp_path, "--procfile", str(procfile), WEB_PORT=str(free_port()))
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if "REDIS unix://" in line:
            break
    assert any("REDIS unix://" in line for line in seen), "".join(seen)
    time.sleep(0.5)
    tree = psutil.Process(process.pid).children(recursive=True)
    redis_pids = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "redis-server" in " ".join(p.info["cmdline"] or [])
        and str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert len(tree) >= 3 and redis_pids
    if to_group:
        os.killpg(process.pid, signum)
    else:
        os.kill(process.pid, signum)
    process.wait(timeout=60)
    _gone, alive = psutil.wait_procs(
        tree + [psutil.Process(p) for p in redis_pids if psutil.pid_exists(p)], timeout=15
    )
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not (tmp_path / "var" / "redis" / "redis.sock").exists()
    assert process.returncode == 0
    rest = process.stdout.read()
    assert "All processes stopped." in rest
    assert "restarting" not in "".join(seen) + rest


class _Output:
    """A launcher's output, read by a thread so that a test waits for a
    line without blocking on the pipe."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def matches(self, pattern: str) -> list[re.Match[str]]:
        with self._changed:
            return [m for line in self.lines if (m := re.search(pattern, line))]

    def wait(self, pattern: str, *, count: int = 1, timeout: float = 60) -> list[re.Match[str]]:
        """Return the matches once count lines match pattern."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [m for line in self.lines if (m := re.search(pattern, line))]
                if len(found) >= count or time.monotonic() >= deadline:
                    break
                self._changed.wait(max(deadline - time.monotonic(), 0))
        assert len(found) >= count, f"{count} x {pattern!r} not in:\n" + "\n".join(self.lines)
        return found


def _started_pid(output: _Output, name: str, *, count: int = 1) -> int:
    return int(output.wait(rf"\| {name} started \(pid (\d+)\)", count=count)[-1].group(1))


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _redis_pids(tmp_path) -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if "redis-server" in " ".join(p.info["cmdline"] or [])
        and str(tmp_path) in " ".join(p.info["cmdline"] or [])
        and not _gone(p.pid)
    ]


@pytest.fixture
def supervised(tmp_path):
    """Start the launcher on a Procfile of the test's own; stop it, and
    anything it left, afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(procfile_text: str, **env: str) -> tuple[subprocess.Popen[str], _Output]:
        procfile = tmp_path / "Procfile"
        procfile.write_text(procfile_text)
        process = _launcher(
            tmp_path, "--procfile", str(procfile), WEB_PORT=str(free_port()), **env
        )
        started.append(process)
        return process, _Output(process.stdout)

    yield start
    for process in started:
        if process.poll() is None:
            tree = psutil.Process(process.pid).children(recursive=True)
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _gone_procs, alive = psutil.wait_procs(tree, timeout=10)
            for leftover in alive:
                leftover.kill()
        process.stdout.close()
        process.stderr.close()
    for pid in _redis_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)


def test_a_killed_process_is_started_again_and_its_output_keeps_its_prefix(supervised):
    """The rest of the stack keeps running; every line carries the time and
    the process name padded to one width."""
    process, output = supervised(
        "steady: sleep 600\n"
        "echo: python -c \"import os, time; print('hello from', os.getpid(), flush=True); "
        'time.sleep(600)"\n'
    )
    hello = r"^\d\d:\d\d:\d\d (echo +)\| hello from (\d+)$"
    first = int(output.wait(hello)[0].group(2))
    steady = _started_pid(output, "steady")

    os.kill(first, signal.SIGKILL)

    output.wait(r"\| echo exited with signal SIGKILL; restarting in 1 s$")
    second = output.wait(hello, count=2)[1]
    assert int(second.group(2)) not in (first, steady)
    assert process.poll() is None
    assert not _gone(steady)
    prefixed = [line for line in output.lines if re.match(r"^\d\d:\d\d:\d\d \S", line)]
    assert len({line.index(" | ") for line in prefixed}) == 1, prefixed
    assert second.group(1) == "echo".ljust(len("steady")) + " "


def test_a_process_that_keeps_crashing_is_started_again_after_growing_pauses(supervised):
    """The launcher and the other processes stay up meanwhile; the pause
    doubles with each exit."""
    process, output = supervised(
        "steady: sleep 600\n"
        "crash: python -c \"import sys; print('crashing', flush=True); sys.exit(3)\"\n"
    )
    steady = _started_pid(output, "steady")

    restarts = output.wait(r"\| crash exited with code 3; restarting in (\d+) s$", count=3)

    assert [int(m.group(1)) for m in restarts[:3]] == [1, 2, 4]
    assert len(output.matches(r"^\d\d:\d\d:\d\d crash +\| crashing$")) >= 3
    assert process.poll() is None
    assert not _gone(steady)
    assert _started_pid(output, "steady", count=1) == steady
    assert len(output.matches(r"\| steady started")) == 1


def test_the_embedded_redis_killed_outright_comes_back_on_its_socket_with_its_data(
    supervised, tmp_path
):
    announce = (
        "import os, time; print('REDIS', os.environ['REDIS_URL'], flush=True); time.sleep(600)"
    )
    process, output = supervised(f'announce: python -c "{announce}"\n')
    url = output.wait(r"\| REDIS (unix://\S+)$")[0].group(1)
    client = redis.Redis.from_url(url)
    client.set("kept", "written before the crash")
    client.close()
    # The append-only file holds the write once redis-server has written it
    # out; a kill -9 loses nothing after that.
    aof = tmp_path / "var" / "redis" / "appendonly.aof"
    wait_for(lambda: aof.exists() and b"written before the crash" in aof.read_bytes())
    (old,) = _redis_pids(tmp_path)

    os.kill(old, signal.SIGKILL)

    output.wait(r"\| redis exited with signal SIGKILL; restarting in 1 s$")
    output.wait(rf"\| redis started \(pid \d+\) on {re.escape(url)}$")
    client = redis.Redis.from_url(url)
    try:
        assert client.get("kept") == b"written before the crash"
    finally:
        client.close()
    assert [pid for pid in _redis_pids(tmp_path) if pid != old]
    assert process.poll() is None


def test_a_launcher_killed_outright_takes_its_processes_and_redis_with_it(supervised, tmp_path):
    process, output = supervised('one: sleep 600\ntwo: python -c "import time; time.sleep(600)"\n')
    children = [_started_pid(output, "one"), _started_pid(output, "two"), *_redis_pids(tmp_path)]
    assert len(children) == 3

    process.kill()
    process.wait()

    _gone_procs, alive = psutil.wait_procs(
        [psutil.Process(pid) for pid in children if psutil.pid_exists(pid)], timeout=15
    )
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_a_malformed_procfile_is_a_one_line_error_before_anything_starts(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("web: sleep 600\nthis line has no name\n")
    process = _launcher(tmp_path, "--procfile", str(procfile), WEB_PORT=str(free_port()))
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert f"{procfile}:2" in lines[0]
    assert not (tmp_path / "var" / "redis" / "redis.sock").exists()


# A process that takes 11 s to finish after SIGTERM, as an inference
# worker finishing its answers does.
_DRAINING = (
    "draining: trap 'sleep 11; echo drained; exit 0' TERM;"
    " echo listening; while true; do sleep 0.2; done\n"
)


def test_a_stop_waits_for_the_inference_worker_s_drain_and_a_second_ctrl_c_cuts_it_short(
    supervised,
):
    """The stop waits INFERENCE_DRAIN_TIMEOUT plus a margin (not a fixed
    10 s) before it kills; a second Ctrl-C kills at once."""
    process, output = supervised(_DRAINING, INFERENCE_DRAIN_TIMEOUT="15")
    output.wait(r" draining \| listening$")
    os.killpg(process.pid, signal.SIGINT)
    output.wait(r"SIGKILL after 20 s, or at once on a second Ctrl-C", timeout=10)
    assert process.wait(timeout=40) == 0
    output.wait(r" draining \| drained$", timeout=5)
    output.wait(r"draining stopped \(code 0\)", timeout=5)
    assert not output.matches("sending SIGKILL")

    process, output = supervised(_DRAINING, INFERENCE_DRAIN_TIMEOUT="15")
    output.wait(r" draining \| listening$")
    os.killpg(process.pid, signal.SIGINT)
    output.wait(r"SIGKILL after 20 s", timeout=10)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=40) == 0
    assert output.matches("draining still running; sending SIGKILL"), "\n".join(output.lines)
    assert not output.matches(r" draining \| drained$")


def test_the_stop_wait_is_never_under_ten_seconds():
    from chatsite.launcher import stop_timeout

    assert stop_timeout(30.0) == 35.0
    assert stop_timeout(1.0) == 10.0
