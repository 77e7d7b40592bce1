"""The launcher and the embedded Redis start and stop cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import redis

from chatsite.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from tests.conftest import REPO_ROOT, free_port


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
