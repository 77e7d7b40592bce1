"""Run the processes of a Procfile and keep them running.

Each ``name: command`` line runs under bash in a process group of its own,
its output copied to stdout behind its name and the time. A process that
exits is started again after a pause that doubles with each exit (1 s up to
30 s) and starts over at 1 s once a run has lasted a minute. The embedded
Redis, when there is one, is kept up the same way. SIGINT or SIGTERM stops
every process: SIGTERM to each group, SIGKILL to what is left after the
stop timeout (10 s unless the caller gives more), or at once on a second
stop signal.

Everything runs in the main thread: a child's death signal is tied to the
thread that forked it, and a fork from a single thread runs its
``preexec_fn`` safely.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import functools
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from chatsite.embedded_redis import EmbeddedRedis, EmbeddedRedisError

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0
STOP_TIMEOUT = 10.0
# A line longer than this is copied in pieces rather than held back.
_MAX_LINE = 16384
_SYSTEM = "system"
_PROCFILE_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(\S.*)$")
_PR_SET_PDEATHSIG = 1


class ProcfileError(ValueError):
    pass


@dataclass(frozen=True)
class ProcfileEntry:
    name: str
    command: str


def procfile_parse(path: Path) -> list[ProcfileEntry]:
    """Read ``name: command`` lines, skipping blank lines and ``#`` comments.

    Raise ProcfileError, with a one-line reason, for a missing or empty
    file, a line of another shape or a name used twice.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProcfileError(f"cannot read the Procfile {path} ({exc.strerror})") from None
    entries: list[ProcfileEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROCFILE_LINE.match(line)
        if match is None:
            raise ProcfileError(f"{path}:{number} is not a `name: command` line: {line}")
        name, command = match.groups()
        if any(entry.name == name for entry in entries):
            raise ProcfileError(f"{path}:{number} names the process {name!r} a second time")
        entries.append(ProcfileEntry(name=name, command=command.strip()))
    if not entries:
        raise ProcfileError(f"the Procfile {path} names no process")
    return entries


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up once here: the child calls it between fork and exec, where
# loading a library is best avoided.
_prctl = _load_prctl()


def _follow_parent(parent: int) -> None:
    """Run in the child before exec: receive SIGTERM when the launcher dies,
    so a launcher killed outright leaves no process behind."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    # The launcher may have died before the death signal was armed.
    if os.getppid() != parent:
        os._exit(1)


def _unlink_if_stale(path: Path) -> None:
    """Remove a unix socket file nothing listens on.

    EmbeddedRedis.start does the same, but its probe goes through redis-py,
    whose retries on a refused connection take seconds.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # no file, or not a socket: start() decides
    finally:
        probe.close()


def _exit_reason(returncode: int) -> str:
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def _seconds(delay: float) -> str:
    return f"{delay:g} s"


class _Backoff:
    """The pause before a start again: doubled after each exit up to
    MAX_DELAY, back to FIRST_DELAY after a run of STABLE_AFTER seconds."""

    def __init__(self) -> None:
        self._next = FIRST_DELAY

    def delay_after(self, *, uptime: float) -> float:
        if uptime >= STABLE_AFTER:
            self._next = FIRST_DELAY
        delay = self._next
        self._next = min(delay * 2, MAX_DELAY)
        return delay


class _Stream:
    """One child's output pipe, read without blocking and copied line by
    line. It outlives its process until the pipe reaches end of file."""

    def __init__(self, name: str, pipe: IO[bytes]) -> None:
        self.name = name
        self.pipe = pipe
        self.partial = b""
        os.set_blocking(pipe.fileno(), False)


class _Unit(abc.ABC):
    """A supervised process: started, watched, and started again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backoff = _Backoff()
        self.started_at = time.monotonic()
        # When set, the unit is down and starts again at this time.
        self.restart_at: float | None = None

    @abc.abstractmethod
    def returncode(self) -> int | None:
        """Return the exit status once the process has ended, else None."""


class _Child(_Unit):
    def __init__(self, entry: ProcfileEntry) -> None:
        super().__init__(entry.name)
        self.entry = entry
        self.process: subprocess.Popen[bytes] | None = None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the child's whole process group, strays of a dead leader
        included."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


class _Redis(_Unit):
    def __init__(self, embedded: EmbeddedRedis) -> None:
        super().__init__("redis")
        self.embedded = embedded

    def returncode(self) -> int | None:
        process = self.embedded.process
        return None if process is None else process.poll()


class Supervisor:
    """Run the Procfile's processes until a stop signal; see the module
    docstring for the policy."""

    def __init__(
        self,
        entries: Sequence[ProcfileEntry],
        *,
        env: dict[str, str],
        cwd: Path,
        embedded: EmbeddedRedis | None = None,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._children = [_Child(entry) for entry in entries]
        self._stop_timeout = stop_timeout
        self._redis = _Redis(embedded) if embedded is not None else None
        self._env = env
        self._cwd = cwd
        self._shell = shutil.which("bash") or "/bin/sh"
        # Redis writes to its own log file; only these names prefix lines.
        self._width = max(len(name) for name in [_SYSTEM, *(c.name for c in self._children)])
        self._selector = selectors.DefaultSelector()
        self._streams: dict[int, _Stream] = {}
        self._stop_requests = 0

    # Output

    def _emit(self, name: str, lines: list[str]) -> None:
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write("".join(f"{stamp} {name:<{self._width}} | {line}\n" for line in lines))
        sys.stdout.flush()

    def _say(self, message: str) -> None:
        self._emit(_SYSTEM, [message])

    def _read(self, stream: _Stream) -> None:
        try:
            chunk = os.read(stream.pipe.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(stream)
            return
        *complete, stream.partial = (stream.partial + chunk).split(b"\n")
        if len(stream.partial) > _MAX_LINE:
            complete.append(stream.partial)
            stream.partial = b""
        if complete:
            self._emit(stream.name, [line.decode(errors="replace") for line in complete])

    def _close(self, stream: _Stream) -> None:
        if stream.partial:
            self._emit(stream.name, [stream.partial.decode(errors="replace")])
            stream.partial = b""
        self._selector.unregister(stream.pipe)
        del self._streams[stream.pipe.fileno()]
        stream.pipe.close()

    def _pump(self, timeout: float) -> None:
        """Copy what the children wrote, waiting up to timeout for output,
        a signal or a child's exit, whichever comes first."""
        for key, _events in self._selector.select(max(timeout, 0.0)):
            if isinstance(key.data, _Stream):
                self._read(key.data)
            else:
                self._drain_wakeups()

    # Starting and watching

    def _start(self, unit: _Unit) -> None:
        unit.restart_at = None
        unit.started_at = time.monotonic()
        if isinstance(unit, _Redis):
            _unlink_if_stale(unit.embedded.socket_path)
            unit.embedded.start()
            self._say(f"redis started (pid {unit.embedded.pid}) on {unit.embedded.url}")
            return
        assert isinstance(unit, _Child)
        process = subprocess.Popen(
            [self._shell, "-c", unit.entry.command],
            cwd=self._cwd,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A group of its own: Ctrl-C reaches the launcher alone, which
            # stops the children in order; killpg also reaches the strays.
            process_group=0,
            preexec_fn=functools.partial(_follow_parent, os.getpid()),
        )
        assert process.stdout is not None
        unit.process = process
        stream = _Stream(unit.name, process.stdout)
        self._streams[process.stdout.fileno()] = stream
        self._selector.register(process.stdout, selectors.EVENT_READ, stream)
        self._say(f"{unit.name} started (pid {process.pid})")

    def _start_or_retry(self, unit: _Unit) -> None:
        try:
            self._start(unit)
        except (OSError, EmbeddedRedisError) as exc:
            delay = unit.backoff.delay_after(uptime=0.0)
            unit.restart_at = time.monotonic() + delay
            reason = str(exc).replace("\n", " ").strip()
            self._say(f"{unit.name} could not start ({reason}); retrying in {_seconds(delay)}")

    def _units(self) -> list[_Unit]:
        units: list[_Unit] = [*self._children]
        if self._redis is not None:
            units.insert(0, self._redis)
        return units

    def _watch(self) -> None:
        """Notice exits, schedule the starts again, and run those due."""
        now = time.monotonic()
        for unit in self._units():
            if unit.restart_at is None:
                code = unit.returncode()
                if code is None:
                    continue
                if isinstance(unit, _Child):
                    # Strays of a dead leader would hold its port or queue.
                    unit.signal_group(signal.SIGKILL)
                delay = unit.backoff.delay_after(uptime=now - unit.started_at)
                unit.restart_at = now + delay
                self._say(
                    f"{unit.name} exited with {_exit_reason(code)}; "
                    f"restarting in {_seconds(delay)}"
                )
            elif unit.restart_at <= now:
                self._start_or_retry(unit)

    def _next_wakeup(self) -> float:
        due = [unit.restart_at for unit in self._units() if unit.restart_at is not None]
        # Exits wake the loop through SIGCHLD; the cap covers a missed one.
        return min([1.0, *(at - time.monotonic() for at in due)])

    # Signals

    def _drain_wakeups(self) -> None:
        try:
            while self._wakeup_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _request_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self._stop_requests += 1

    def _install_signals(self) -> dict[int, Any]:
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        self._wakeup_reader.setblocking(False)
        self._wakeup_writer.setblocking(False)
        self._selector.register(self._wakeup_reader, selectors.EVENT_READ, None)
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self._wakeup_writer.fileno(), warn_on_full_buffer=False
        )
        previous: dict[int, Any] = {
            signum: signal.signal(signum, self._request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        # A handler, even one doing nothing, makes a child's exit wake the
        # loop through the wakeup socket.
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._selector.unregister(self._wakeup_reader)
        self._wakeup_reader.close()
        self._wakeup_writer.close()

    # Running and stopping

    def run(self) -> None:
        """Start every process and keep each one running until SIGINT or
        SIGTERM; then stop them all. Call from the main thread.

        Leave the embedded Redis running: the caller stops it last.
        """
        previous = self._install_signals()
        try:
            for child in self._children:
                self._start_or_retry(child)
            while not self._stop_requests:
                self._pump(self._next_wakeup())
                if not self._stop_requests:
                    self._watch()
        finally:
            try:
                self._stop_children()
            finally:
                self._restore_signals(previous)

    def _stop_children(self) -> None:
        """SIGTERM every group, wait up to the stop timeout while copying their
        output (a second stop signal cuts the wait short), SIGKILL what is
        left."""
        # The request that began the stop (none when an error did); any
        # after it, even one that came before this line, skips the wait.
        first_request = min(self._stop_requests, 1)
        running = [child for child in self._children if child.alive()]
        if running:
            names = ", ".join(child.name for child in running)
            self._say(
                f"stopping {names} (SIGTERM; SIGKILL after {_seconds(self._stop_timeout)},"
                " or at once on a second Ctrl-C)"
            )
        for child in running:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        while time.monotonic() < deadline and self._stop_requests <= first_request:
            for child in list(running):
                code = child.returncode()
                if code is not None:
                    running.remove(child)
                    self._say(f"{child.name} stopped ({_exit_reason(code)})")
            if not running:
                break
            self._pump(min(0.5, deadline - time.monotonic()))
        for child in self._children:
            if child.alive():
                self._say(f"{child.name} still running; sending SIGKILL")
            # Also ends what a stopped leader left behind in its group.
            child.signal_group(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()
        # The pipes close once the last process holding them is gone.
        deadline = time.monotonic() + 2.0
        while self._streams and time.monotonic() < deadline:
            self._pump(min(0.2, deadline - time.monotonic()))
        for stream in list(self._streams.values()):
            self._close(stream)
