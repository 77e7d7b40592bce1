"""Soak test of the chat socket: ``make soak`` or ``python -m tools.soak``.

By default start a stack of its own exactly as ``make run`` does
(``python -m chatsite.launcher``) in a temporary ``VAR_DIR`` (fresh SQLite,
embedded Redis) on a free port, serving a tiny random llama built on the
default model's tokenizer. ``--url`` targets a running stack instead.

Sign users up (or log them in) through the real HTTP forms, hold idle
chat sockets open for the whole run, and run concurrent streaming chats
over ``/ws/chat/``. Measure time to first text and the gaps between text
frames; count error frames, closed sockets, lost and repeated stream
events (sequence numbers), answers whose streamed text differs from the
stored one, and idle sockets still open at the end; sample the memory of
every stack process. Print a summary, write it as JSON
(``var/soak/last.json``), and exit 1 when anything was lost, repeated,
refused or dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from inference.convert import random_llama_save

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

BASE_DIR = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
#: Seconds to wait, after the first ``message.finished`` of an answer, for
#: the second one. The socket's own tail sends one after the last text
#: frame; the worker's store also notifies the conversation group, and that
#: one may overtake text frames still on their way.
FINISH_GRACE_S = 5.0
#: Handshakes in flight at once: Daphne listens with a small backlog.
CONNECT_CONCURRENCY = 32
#: Variables of the caller's environment that must not reach a stack of the
#: soak's own: it gets its own database, Redis, port and folders.
STACK_ENV_DROP = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_KEY_PREFIX",
    "WEB_HOST",
    "WEB_PORT",
    "VAR_DIR",
    "MODEL_DIR",
    "DEFAULT_MODEL_DIR",
    "CELERY_TASK_ALWAYS_EAGER",
)
TINY_MODEL_NAME = "soak-tiny"


class SoakError(RuntimeError):
    """The soak could not be set up; the message says why."""


# --- limits ----------------------------------------------------------------


def nofile_raise(*, needed: int) -> tuple[int, int]:
    """Raise this process's open-files limit to the hard limit when below
    needed; children (the stack) inherit it. Return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


# --- the tiny model ----------------------------------------------------------


def tiny_model_build(*, destination: Path, tokenizer_dir: Path) -> Path:
    """Save a randomly initialised two-layer llama with the tokenizer (and
    chat template) of tokenizer_dir to destination. Raise SoakError when
    tokenizer_dir holds no tokenizer."""
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise SoakError(
            f"no tokenizer at {tokenizer_dir}: run `make model` first, or pass --model FOLDER"
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return random_llama_save(destination=destination, tokenizer=tokenizer)


# --- the stack ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _process_label(process: psutil.Process) -> str:
    try:
        cmdline = " ".join(process.cmdline())
        parent = process.parent()
        parent_cmdline = " ".join(parent.cmdline()) if parent is not None else ""
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    for needle, label in (
        ("chatsite.launcher", "launcher"),
        ("redis-server", "redis"),
        ("daphne", "web (daphne)"),
        ("run_inference_worker", "inference worker"),
        ("celery", "celery"),
    ):
        if needle in cmdline:
            if label == "celery" and "celery" in parent_cmdline:
                return "celery (pool)"
            return label
    return process.name()


@dataclass
class ProcessSample:
    pid: int
    label: str
    rss_mib: float
    fds: int
    nofile_soft: int
    cpu_s: float


def tree_sample(root_pid: int) -> list[ProcessSample]:
    """RSS, open descriptors, open-files limit and CPU seconds of root_pid
    and every process under it (empty when root_pid is gone)."""
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    samples = []
    for process in processes:
        try:
            with process.oneshot():
                rss = process.memory_info().rss / MIB
                fds = process.num_fds()
                soft, _hard = process.rlimit(psutil.RLIMIT_NOFILE)
                cpu = process.cpu_times()
            samples.append(
                ProcessSample(
                    process.pid,
                    _process_label(process),
                    round(rss, 1),
                    fds,
                    soft,
                    round(cpu.user + cpu.system, 2),
                )
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return samples


@dataclass
class Stack:
    """A stack started by the launcher in a folder of its own."""

    base: str
    process: subprocess.Popen[bytes]
    folder: Path
    log_path: Path
    log_file: Any
    ready_offset: int = 0

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """Lines of the stack's log, since it was ready, that report errors
        or tracebacks (the readiness probe's 503s before are expected)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.ready_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        markers = (" ERROR ", " CRITICAL ", "Traceback (most recent call last)")
        found: list[str] = []
        traceback_left = 0
        for line in text.splitlines():
            if "Traceback (most recent call last)" in line:
                # Keep the whole traceback: its last lines name the cause.
                traceback_left = 40
            if traceback_left or any(m in line for m in markers):
                found.append(line)
                traceback_left = max(0, traceback_left - 1)
        return found


def _stack_env(var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STACK_ENV_DROP}
    env.update(
        VAR_DIR=str(var_dir),
        MODEL_DIR=str(var_dir / "models"),
        WEB_PORT=str(port),
        PYTHONUNBUFFERED="1",
        # Every soak user signs up from this machine's address.
        SIGNUPS_PER_ADDRESS_PER_HOUR="1000000",
    )
    if (BASE_DIR / ".env").is_file():
        # The settings fill unset variables from .env, which may name a
        # real database or Redis: pin the defaults (an empty REDIS_URL
        # starts the embedded one).
        env.update(DATABASE_URL=f"sqlite:///{var_dir / 'db.sqlite3'}", REDIS_URL="")
    return env


def _manage(args: list[str], *, env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _manage_wait(process: subprocess.Popen[bytes], what: str, log_path: Path) -> None:
    if process.wait(timeout=300) != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SoakError(f"{what} failed (exit {process.returncode}):\n{tail}")


def stack_start(
    *, model: Path | None, tokenizer_dir: Path, start_timeout_s: float, say: Any
) -> Stack:
    """Migrate a fresh database, register and promote the model (a tiny one
    built on the spot unless model is given), start the launcher on a free
    port and wait until /readyz is green. Raise SoakError on failure."""
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    var_dir = folder / "var"
    port = free_port()
    env = _stack_env(var_dir, port)
    log_path = folder / "stack.log"
    log_file = log_path.open("ab")

    say(f"stack folder {folder}")
    migrate = _manage(["migrate", "--noinput"], env=env, log=log_file)
    try:
        if model is None:
            say(f"building a tiny random llama on the tokenizer of {tokenizer_dir}")
            model = tiny_model_build(
                destination=var_dir / "models" / TINY_MODEL_NAME, tokenizer_dir=tokenizer_dir
            )
        _manage_wait(migrate, "manage.py migrate", log_path)
    except BaseException:
        migrate.kill()
        migrate.wait()
        raise
    register = _manage(
        [
            "model_register",
            str(model),
            "--name",
            TINY_MODEL_NAME,
            "--promote",
            "--note",
            "Soak test model.",
        ],
        env=env,
        log=log_file,
    )
    _manage_wait(register, "manage.py model_register", log_path)

    say(f"starting python -m chatsite.launcher on port {port}")
    process = subprocess.Popen(
        [sys.executable, "-m", "chatsite.launcher"],
        cwd=BASE_DIR,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = Stack(f"http://127.0.0.1:{port}", process, folder, log_path, log_file)
    deadline = time.monotonic() + start_timeout_s
    status = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status, _headers, _body = HttpSession(stack.base).request("GET", "/readyz")
        except (OSError, http.client.HTTPException):
            status = 0
        if status == 200:
            stack.ready_offset = log_path.stat().st_size
            return stack
        time.sleep(0.5)
    stop = stack_stop(stack)
    raise SoakError(
        f"the stack was not ready in {start_timeout_s:.0f} s (readyz {status}, "
        f"launcher exit {stop['exit_code']}):\n{stack.log_tail()}"
    )


def stack_stop(stack: Stack, *, timeout_s: float = 90.0) -> dict[str, Any]:
    """SIGTERM the launcher's process group and wait for it to drain and
    exit; kill what is left after timeout_s. Return the exit code, the
    seconds it took and the processes that had to be killed."""
    process = stack.process
    started = time.monotonic()
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        exit_code: int | None = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        exit_code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _gone, alive = psutil.wait_procs(tree, timeout=15)
    left = []
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if leftover.status() == psutil.STATUS_ZOMBIE:
                continue
            left.append(f"{_process_label(leftover)} ({leftover.pid})")
            leftover.kill()
    stack.log_file.close()
    return {
        "exit_code": exit_code,
        "seconds": round(time.monotonic() - started, 1),
        "left_running": left,
    }


# --- HTTP: forms and the JSON API -----------------------------------------------


class HttpSession:
    """One browser's cookies against base; redirects are not followed."""

    def __init__(self, base: str) -> None:
        parsed = urllib.parse.urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SoakError(f"not an http(s) URL: {base}")
        self.base = base.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.prefix = parsed.path.rstrip("/")
        self.origin = f"{parsed.scheme}://{parsed.netloc}"
        self.cookies: dict[str, str] = {}

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        timeout_s: float = 60.0,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection_class = (
            http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(self.host, self.port, timeout=timeout_s)
        headers = {"Accept": "application/json, text/html", "Origin": self.origin}
        # Django checks the Referer of unsafe requests over HTTPS.
        headers["Referer"] = self.base + path
        if self.cookies:
            headers["Cookie"] = self.cookie_header()
        if "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        data: bytes | None = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, self.prefix + path, body=data, headers=headers)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response.status, response.headers, content

    def _form_post(self, path: str, fields: dict[str, str]) -> int:
        status, _headers, _body = self.request("GET", path)
        if status != 200 or "csrftoken" not in self.cookies:
            raise SoakError(f"GET {path} answered {status} without a CSRF cookie")
        status, _headers, _body = self.request(
            "POST", path, form={**fields, "csrfmiddlewaretoken": self.cookies["csrftoken"]}
        )
        return status

    def signup(self, *, username: str, password: str) -> None:
        """Create the account through the signup form; it logs in."""
        status = self._form_post(
            "/accounts/signup/",
            {"username": username, "email": "", "password1": password, "password2": password},
        )
        if status != 302 or "sessionid" not in self.cookies:
            raise SoakError(f"signup of {username} failed (HTTP {status})")

    def login(self, *, username: str, password: str) -> None:
        """Log in through the login form. A wrong password counts towards
        the lockout, so it is tried once."""
        status = self._form_post("/accounts/login/", {"username": username, "password": password})
        if status != 302 or "sessionid" not in self.cookies:
            raise SoakError(f"login of {username} failed (HTTP {status})")

    def conversation_create(self, *, max_tokens: int, title: str) -> int:
        status, _headers, content = self.request(
            "POST", "/api/conversations/", body={"max_tokens": max_tokens, "title": title}
        )
        if status != 201:
            raise SoakError(f"creating a conversation answered {status}: {content[:300]!r}")
        return int(json.loads(content)["id"])


def sessions_open(
    *, base: str, count: int, credentials: list[tuple[str, str]], concurrency: int = 4
) -> list[HttpSession]:
    """Log in with credentials, or sign up count fresh users when there are
    none. Return one logged-in session per user."""
    run = uuid.uuid4().hex[:8]

    def one(index: int) -> HttpSession:
        session = HttpSession(base)
        if credentials:
            username, password = credentials[index]
            session.login(username=username, password=password)
        else:
            session.signup(username=f"soak-{run}-{index}", password=f"Soak-{uuid.uuid4().hex}")
        return session

    total = len(credentials) if credentials else count
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(total)))


# --- the sockets ------------------------------------------------------------------


@dataclass
class Counts:
    """What went wrong, by kind; every one of these must stay at zero."""

    error_frames: int = 0
    socket_closes: int = 0
    seq_gaps: int = 0
    seq_repeats: int = 0
    text_mismatches: int = 0
    answers_not_done: int = 0
    chat_timeouts: int = 0
    idle_not_opened: int = 0
    idle_dropped: int = 0


@dataclass
class Run:
    """Everything measured, shared by the socket tasks of one run."""

    counts: Counts = field(default_factory=Counts)
    ttft_s: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    #: The engine's own view, from the stored answers' timings.
    engine_queue_s: list[float] = field(default_factory=list)
    engine_ttft_s: list[float] = field(default_factory=list)
    #: Waiting in the requests stream for a worker slot, and what is left
    #: of the time to first text once that and the engine's part are
    #: taken out (the web, Redis and this client).
    claim_wait_s: list[float] = field(default_factory=list)
    web_path_s: list[float] = field(default_factory=list)
    chats_sent: int = 0
    chats_finished: int = 0
    text_frames: int = 0
    completion_tokens: int = 0
    finished_frames: Counter[int] = field(default_factory=Counter)
    waiting_frames: int = 0
    resets: int = 0
    idle_frames: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    #: Set when the soak itself starts closing its sockets.
    closing: bool = False

    def problem(self, text: str) -> None:
        # The first few tell the story; thousands would bury it.
        if len(self.problems) < 50:
            self.problems.append(text)


async def socket_open(session: HttpSession, *, timeout_s: float) -> ClientConnection:
    """Open /ws/chat/ as a logged-in page would and read its hello frame.
    Raise SoakError when the server refuses or does not greet."""
    parsed = urllib.parse.urlsplit(session.base)
    scheme = "wss" if parsed.scheme == "https" else "ws"
    url = f"{scheme}://{parsed.netloc}{session.prefix}/ws/chat/"
    try:
        ws = await connect(
            url,
            origin=session.origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": session.cookie_header()},
            open_timeout=timeout_s,
            # Daphne pings every socket and the client answers while it
            # reads; the soak checks liveness itself at the end.
            ping_interval=None,
            compression=None,
            proxy=None,
        )
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
        raise SoakError(f"handshake failed ({status or type(exc).__name__}: {exc})") from None
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    except (ConnectionClosed, TimeoutError) as exc:
        await ws.close()
        raise SoakError(f"no hello frame ({type(exc).__name__}: {exc})") from None
    if hello.get("type") != "hello":
        await ws.close()
        raise SoakError(f"expected hello, got {hello}")
    return ws


async def idle_hold(ws: ClientConnection, run: Run, index: int) -> None:
    """Read (and count) whatever the server pushes to an idle socket until
    it closes; send nothing."""
    try:
        async for raw in ws:
            frame = json.loads(raw)
            kind = str(frame.get("type"))
            run.idle_frames[kind] += 1
            if kind == "error":
                run.counts.error_frames += 1
                run.problem(f"idle socket {index}: error frame {frame}")
    except ConnectionClosed:
        pass
    finally:
        if not run.closing:
            run.counts.idle_dropped += 1
            run.problem(
                f"idle socket {index} closed by the server: {ws.close_code} {ws.close_reason!r}"
            )


@dataclass
class Chat:
    """One question and its streamed answer, as one socket saw them."""

    sent_at: float
    client_id: str
    answer: int | None = None
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def chat_check(chat: Chat, run: Run, where: str) -> None:
    """Add one finished chat's timings and faults to run."""
    run.chats_finished += 1
    answer = chat.finished[0]
    run.finished_frames[len(chat.finished)] += 1
    if answer.get("status") != "done":
        run.counts.answers_not_done += 1
        run.problem(
            f"{where}: answer {chat.answer} ended {answer.get('status')} "
            f"({answer.get('finish_reason')}: {answer.get('error')})"
        )
    completion = (answer.get("usage") or {}).get("completion_tokens")
    run.completion_tokens += int(completion or 0)
    timings = answer.get("timings") or {}
    if timings.get("queue_s") is not None:
        run.engine_queue_s.append(float(timings["queue_s"]))
    if timings.get("ttft_s") is not None:
        run.engine_ttft_s.append(float(timings["ttft_s"]))
    if timings.get("claim_wait_s") is not None:
        run.claim_wait_s.append(float(timings["claim_wait_s"]))

    highest = 0
    seen: set[int] = set()
    text: list[str] = []
    text_times: list[float] = []
    for at, frame in chat.events:
        seq = int(frame.get("seq") or 0)
        if seq in seen or seq <= highest:
            run.counts.seq_repeats += 1
            run.problem(f"{where}: answer {chat.answer} seq {seq} again after {highest}")
            continue
        seen.add(seq)
        highest = seq
        if frame["type"] == "generation.text":
            text.append(str(frame.get("text", "")))
            text_times.append(at)
    missing = highest - len(seen)
    if missing:
        run.counts.seq_gaps += missing
        gaps = sorted(set(range(1, highest + 1)) - seen)
        run.problem(f"{where}: answer {chat.answer} missed seq {gaps[:20]}")
    streamed = "".join(text)
    if streamed != answer.get("content"):
        run.counts.text_mismatches += 1
        run.problem(
            f"{where}: answer {chat.answer} streamed {len(streamed)} chars "
            f"{streamed[-60:]!r}, stored {len(answer.get('content') or '')} "
            f"{(answer.get('content') or '')[-60:]!r}"
        )
    run.text_frames += len(text_times)
    if text_times:
        run.ttft_s.append(text_times[0] - chat.sent_at)
        parts = (timings.get("claim_wait_s"), timings.get("ttft_s"))
        if None not in parts:
            wait, engine = (float(part) for part in parts)  # type: ignore[arg-type]
            run.web_path_s.append(max(text_times[0] - chat.sent_at - wait - engine, 0.0))
        run.gaps_s.extend(b - a for a, b in itertools.pairwise(text_times))


async def chat_once(
    ws: ClientConnection,
    *,
    conversation: int,
    content: str,
    timeout_s: float,
    run: Run,
    where: str,
) -> bool:
    """Send one message and read its answer to the end. Return False when
    the socket can no longer be used."""
    chat = Chat(sent_at=time.perf_counter(), client_id=uuid.uuid4().hex)
    run.chats_sent += 1
    await ws.send(
        json.dumps(
            {
                "type": "message.send",
                "conversation": conversation,
                "content": content,
                "client_id": chat.client_id,
            }
        )
    )
    deadline = chat.sent_at + timeout_s
    grace_until: float | None = None
    while True:
        now = time.perf_counter()
        until = deadline if grace_until is None else min(deadline, grace_until)
        if now >= until:
            break
        try:
            raw = await asyncio.wait_for(ws.recv(), until - now)
        except TimeoutError:
            break
        at = time.perf_counter()
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "error":
            run.counts.error_frames += 1
            run.problem(f"{where}: error frame {frame}")
            if frame.get("client_id") == chat.client_id or frame.get("fatal"):
                return True
        elif kind == "message.accepted" and frame.get("client_id") == chat.client_id:
            answer = frame.get("answer") or {}
            chat.answer = answer.get("id")
            if chat.answer is None:
                run.counts.answers_not_done += 1
                run.problem(f"{where}: message accepted without an answer: {frame}")
                return True
        elif kind in ("generation.queued", "generation.start", "generation.text"):
            chat.events.append((at, frame))
        elif kind == "generation.waiting":
            run.waiting_frames += 1
        elif kind == "generation.reset" and frame.get("message") == chat.answer:
            # The server lost events on the way and replays the answer from
            # its first event: what came before no longer counts.
            run.resets += 1
            run.problem(f"{where}: answer {chat.answer} reset: {frame.get('reason')}")
            chat.events = [(t, f) for t, f in chat.events if f.get("message") != chat.answer]
        elif kind == "message.finished":
            answer = frame.get("answer") or {}
            if chat.answer is not None and answer.get("id") == chat.answer:
                chat.finished.append(answer)
                if len(chat.finished) >= 2:
                    break
                grace_until = at + FINISH_GRACE_S
    chat.events = [(at, f) for at, f in chat.events if f.get("message") == chat.answer]
    if not chat.finished:
        run.counts.chat_timeouts += 1
        run.problem(f"{where}: no message.finished for answer {chat.answer} in {timeout_s:.0f} s")
        return True
    chat_check(chat, run, where)
    return True


async def stream_run(
    index: int,
    session: HttpSession,
    conversation: int,
    *,
    args: argparse.Namespace,
    until: float,
    run: Run,
) -> None:
    """Chat on one socket until the duration is over, one message at a
    time, at most one send every ``args.pace`` seconds."""
    where = f"stream {index}"
    try:
        ws = await socket_open(session, timeout_s=args.connect_timeout)
    except SoakError as exc:
        run.counts.socket_closes += 1
        run.problem(f"{where}: {exc}")
        return
    number = 0
    try:
        while True:
            number += 1
            started = time.monotonic()
            await chat_once(
                ws,
                conversation=conversation,
                content=f"Soak message {number} of stream {index}: say something.",
                timeout_s=args.chat_timeout,
                run=run,
                where=where,
            )
            if time.monotonic() >= until:
                break
            await asyncio.sleep(max(0.0, started + args.pace - time.monotonic()))
            if time.monotonic() >= until:
                break
    except ConnectionClosed as exc:
        run.counts.socket_closes += 1
        run.problem(f"{where}: socket closed by the server: {exc}")
    finally:
        await ws.close()


async def still_open(ws: ClientConnection, timeout_s: float) -> bool:
    """True when the socket is open and answers a ping."""
    if ws.state is not State.OPEN:
        return False
    try:
        pong = await ws.ping()
        await asyncio.wait_for(pong, timeout_s)
    except (ConnectionClosed, TimeoutError):
        return False
    return True


class MemorySampler:
    """Sample the stack's processes every interval_s in a thread; keep the
    highest RSS of each."""

    def __init__(self, root_pid: int, interval_s: float = 1.0) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> list[ProcessSample]:
        samples = tree_sample(self.root_pid)
        for s in samples:
            self.peak[s.pid] = max(self.peak.get(s.pid, 0.0), s.rss_mib)
        return samples

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def soak(
    *,
    args: argparse.Namespace,
    sessions: list[HttpSession],
    conversations: list[int],
    sampler: MemorySampler | None,
    say: Any,
) -> tuple[Run, dict[str, Any]]:
    """Open the idle sockets, run the streams, check the idle sockets and
    sample memory before and after. Return the run and memory samples."""
    run = Run()
    memory: dict[str, Any] = {}
    if sampler is not None:
        memory["before"] = [asdict(s) for s in sampler.sample()]
        sampler.start()

    say(f"opening {args.idle} idle sockets")
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def idle_open(index: int) -> ClientConnection | None:
        async with gate:
            try:
                return await socket_open(
                    sessions[index % len(sessions)], timeout_s=args.connect_timeout
                )
            except SoakError as exc:
                run.counts.idle_not_opened += 1
                run.problem(f"idle socket {index}: {exc}")
                return None

    opened = await asyncio.gather(*(idle_open(i) for i in range(args.idle)))
    idle = [ws for ws in opened if ws is not None]
    holders = [asyncio.ensure_future(idle_hold(ws, run, i)) for i, ws in enumerate(idle)]
    say(f"{len(idle)} idle sockets open; {args.streams} streams for {args.duration:.0f} s")

    started = time.monotonic()
    until = started + args.duration
    await asyncio.gather(
        *(
            stream_run(
                i,
                sessions[i % len(sessions)],
                conversations[i],
                args=args,
                until=until,
                run=run,
            )
            for i in range(args.streams)
        )
    )
    stream_seconds = time.monotonic() - started

    alive = await asyncio.gather(*(still_open(ws, args.connect_timeout) for ws in idle))
    run.closing = True
    idle_open_count = sum(alive)
    if sampler is not None:
        sampler.stop()
        memory["after"] = [asdict(s) for s in sampler.sample()]
        memory["peak"] = {str(pid): rss for pid, rss in sampler.peak.items()}
    await asyncio.gather(*(ws.close() for ws in idle), return_exceptions=True)
    await asyncio.gather(*holders, return_exceptions=True)
    memory["idle_open_at_end"] = idle_open_count
    memory["stream_seconds"] = round(stream_seconds, 1)
    return run, memory


# --- the report ---------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max in milliseconds (nearest rank)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    return {
        "p50": round(rank(50) * 1000, 1),
        "p90": round(rank(90) * 1000, 1),
        "p99": round(rank(99) * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def report_build(
    *,
    args: argparse.Namespace,
    target: str,
    run: Run,
    memory: dict[str, Any],
    stop: dict[str, Any] | None,
    log_problems: list[str],
    nofile: tuple[int, int],
) -> dict[str, Any]:
    counts = asdict(run.counts)
    idle_open = memory.get("idle_open_at_end", 0)
    if idle_open < args.idle:
        # A socket that never opened was counted already; one that opened
        # and no longer answers is a drop even if no close frame was seen.
        counts["idle_dropped"] = max(
            counts["idle_dropped"], args.idle - idle_open - counts["idle_not_opened"]
        )
    failures = [name for name, value in counts.items() if value]
    if run.chats_finished == 0:
        failures.append("no_chat_finished")
    if stop is not None and (stop["exit_code"] != 0 or stop["left_running"]):
        failures.append("unclean_stop")
    seconds = memory.get("stream_seconds") or 0
    return {
        "target": target,
        "idle": args.idle,
        "streams": args.streams,
        "duration_s": args.duration,
        "max_tokens": args.max_tokens,
        "stream_seconds": seconds,
        "chats_sent": run.chats_sent,
        "chats_finished": run.chats_finished,
        "text_frames": run.text_frames,
        "completion_tokens": run.completion_tokens,
        "tokens_per_s": round(run.completion_tokens / seconds, 1) if seconds else None,
        "ttft_ms": percentiles(run.ttft_s),
        "gap_ms": percentiles(run.gaps_s),
        "engine_queue_ms": percentiles(run.engine_queue_s),
        "engine_ttft_ms": percentiles(run.engine_ttft_s),
        "claim_wait_ms": percentiles(run.claim_wait_s),
        "web_path_ms": percentiles(run.web_path_s),
        "counts": counts,
        "idle_open_at_end": idle_open,
        "idle_frames": dict(run.idle_frames),
        "finished_frames_per_answer": {str(k): v for k, v in run.finished_frames.items()},
        "waiting_frames": run.waiting_frames,
        "stream_resets": run.resets,
        "memory": {k: v for k, v in memory.items() if k in ("before", "after", "peak")},
        "stack_stop": stop,
        "server_log_problems": log_problems[:400],
        "server_log_problem_count": sum(
            " ERROR " in line or " CRITICAL " in line for line in log_problems
        ),
        "client_nofile": list(nofile),
        "host": {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]},
        "problems": run.problems,
        "failures": failures,
        "ok": not failures,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def report_lines(report: dict[str, Any]) -> Iterator[str]:
    counts = report["counts"]
    yield ""
    yield (
        f"Soak of {report['target']}: {report['idle']} idle sockets, {report['streams']} "
        f"streams for {report['duration_s']:.0f} s, max {report['max_tokens']} tokens"
    )
    yield ""
    yield f"  {'':30}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}"
    for label, key in (
        ("time to first text (ms)", "ttft_ms"),
        ("gap between text frames (ms)", "gap_ms"),
        ("  waiting for a slot (ms)", "claim_wait_ms"),
        ("  engine queue (ms)", "engine_queue_ms"),
        ("  engine first token (ms)", "engine_ttft_ms"),
        ("  web, Redis, client (ms)", "web_path_ms"),
    ):
        row = report[key]
        yield f"  {label:30}" + "".join(f"{_ms(row[q]):>10}" for q in ("p50", "p90", "p99", "max"))
    yield ""
    rate = report["tokens_per_s"]
    rows = [
        ("chats finished / sent", f"{report['chats_finished']} / {report['chats_sent']}"),
        (
            "tokens streamed",
            f"{report['completion_tokens']:,} in {report['text_frames']:,} text frames"
            + (f", {rate:,.0f} tok/s over {report['stream_seconds']:.0f} s" if rate else ""),
        ),
        ("error frames", counts["error_frames"]),
        ("socket closes", counts["socket_closes"] + counts["idle_dropped"]),
        ("lost events (seq gaps)", counts["seq_gaps"]),
        ("repeated events", counts["seq_repeats"]),
        ("streamed != stored text", counts["text_mismatches"]),
        ("answers not done", counts["answers_not_done"]),
        ("chats timed out", counts["chat_timeouts"]),
        ("streams replayed (reset)", report["stream_resets"]),
        (
            "idle sockets open at end",
            f"{report['idle_open_at_end']} / {report['idle']}"
            + (
                f" ({counts['idle_not_opened']} never opened)" if counts["idle_not_opened"] else ""
            ),
        ),
        (
            "frames to idle sockets",
            ", ".join(f"{k} {v}" for k, v in report["idle_frames"].items()) or "0",
        ),
        ("server log errors", report["server_log_problem_count"]),
        (
            "host",
            f"{report['host']['cpus']} CPUs, load average "
            + " / ".join(f"{x:.1f}" for x in report["host"]["load_avg"])
            + " (1, 5, 15 min) at the end",
        ),
    ]
    for label, value in rows:
        yield f"  {label:30}{value}"
    memory = report["memory"]
    if memory.get("before"):
        yield ""
        yield (
            f"  {'server memory (RSS MiB)':30}{'before':>10}{'peak':>10}{'after':>10}"
            f"{'cpu s':>8}{'fds':>12}{'nofile':>8}"
        )
        after = {s["pid"]: s for s in memory.get("after", [])}
        totals = [0.0, 0.0, 0.0, 0.0]
        for s in memory["before"]:
            later = after.get(s["pid"])
            peak = memory.get("peak", {}).get(str(s["pid"]), s["rss_mib"])
            end = later["rss_mib"] if later else None
            cpu = later["cpu_s"] - s["cpu_s"] if later else None
            fds = f"{s['fds']}->{later['fds']}" if later else f"{s['fds']}->gone"
            totals[0] += s["rss_mib"]
            totals[1] += peak
            totals[2] += end or 0.0
            totals[3] += cpu or 0.0
            yield (
                f"  {s['label'] + ' ' + str(s['pid']):30}{s['rss_mib']:>10.1f}{peak:>10.1f}"
                f"{_ms(end):>10}{_ms(cpu):>8}{fds:>12}{s['nofile_soft']:>8}"
            )
        yield (
            f"  {'total':30}{totals[0]:>10.1f}{totals[1]:>10.1f}{totals[2]:>10.1f}"
            f"{totals[3]:>8.1f}"
        )
    stop = report["stack_stop"]
    if stop is not None:
        left = ", ".join(stop["left_running"]) or "none"
        yield ""
        yield (
            f"  {'stack stop (SIGTERM)':30}exit {stop['exit_code']} after {stop['seconds']} s, "
            f"left running: {left}"
        )
    if report["problems"]:
        yield ""
        yield "  First problems:"
        for problem in report["problems"][:20]:
            yield f"    {problem}"
    if report["server_log_problems"]:
        yield ""
        yield "  Server log errors:"
        for line in report["server_log_problems"][:60]:
            yield f"    {line[:200]}"
    yield ""
    yield "  RESULT: " + (
        "PASS" if report["ok"] else "FAIL (" + ", ".join(report["failures"]) + ")"
    )
    yield ""


# --- command line -------------------------------------------------------------------


def _credentials(path: Path | None) -> list[tuple[str, str]]:
    if path is None:
        return []
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            username, sep, password = line.strip().partition(":")
            if not sep:
                raise SoakError(f"{path}: expected username:password lines")
            pairs.append((username, password))
    return pairs


def parser_build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.soak", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--idle", type=int, default=500, help="idle sockets held open (500)")
    parser.add_argument("--streams", type=int, default=64, help="concurrent chats (64)")
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="users to sign up (default: one per stream; the server limits each "
        "user's concurrent answers)",
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="answer length cap (32)")
    parser.add_argument(
        "--duration", type=float, default=45.0, help="seconds the streams keep chatting (45)"
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=3.5,
        help="least seconds between one stream's sends (3.5; the server allows 20 "
        "messages a minute per user by default)",
    )
    parser.add_argument("--chat-timeout", type=float, default=90.0, help="seconds per answer")
    parser.add_argument(
        "--connect-timeout", type=float, default=30.0, help="seconds per handshake"
    )
    parser.add_argument("--start-timeout", type=float, default=240.0, help="seconds to readiness")
    parser.add_argument("--url", help="a running stack to soak instead of starting one")
    parser.add_argument(
        "--credentials",
        type=Path,
        help="file of username:password lines to log in with (default: sign up fresh users)",
    )
    parser.add_argument(
        "--pid", type=int, help="with --url: the launcher's pid, to sample its processes' memory"
    )
    parser.add_argument(
        "--model", type=Path, help="model folder to serve instead of a tiny random llama"
    )
    parser.add_argument("--json", type=Path, help="report file (default var/soak/last.json)")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder and log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser_build().parse_args(argv)
    from django.conf import settings

    def say(text: str) -> None:
        print(f"soak: {text}", flush=True)

    nofile = nofile_raise(needed=args.idle + 2 * args.streams + 512)
    say(f"open-files limit {nofile[0]} (hard {nofile[1]})")
    json_path = args.json or Path(settings.VAR_DIR) / "soak" / "last.json"
    stack: Stack | None = None
    stop: dict[str, Any] | None = None
    ok = False
    log_problems: list[str] = []
    try:
        if args.url:
            base = args.url
            target = base
        else:
            stack = stack_start(
                model=args.model.resolve() if args.model else None,
                tokenizer_dir=Path(settings.DEFAULT_MODEL_DIR),
                start_timeout_s=args.start_timeout,
                say=say,
            )
            base = stack.base
            target = f"own stack at {base}"
        credentials = _credentials(args.credentials)
        users = len(credentials) or args.users or args.streams
        say(f"{'logging in' if credentials else 'signing up'} {users} user(s)")
        sessions = sessions_open(base=base, count=users, credentials=credentials)
        conversations = [
            sessions[i % len(sessions)].conversation_create(
                max_tokens=args.max_tokens, title=f"Soak stream {i}"
            )
            for i in range(args.streams)
        ]
        root_pid = stack.process.pid if stack is not None else args.pid
        sampler = MemorySampler(root_pid) if root_pid else None
        run, memory = asyncio.run(
            soak(
                args=args, sessions=sessions, conversations=conversations, sampler=sampler, say=say
            )
        )
        if stack is not None:
            say("stopping the stack")
            stop = stack_stop(stack)
            log_problems = stack.log_problems()
        report = report_build(
            args=args,
            target=target,
            run=run,
            memory=memory,
            stop=stop,
            log_problems=log_problems,
            nofile=nofile,
        )
        ok = bool(report["ok"])
        for line in report_lines(report):
            print(line)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        say(f"report written to {json_path}")
    except SoakError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if stack is not None:
            if stop is None:
                stack_stop(stack)
            if ok and not args.keep and not log_problems:
                shutil.rmtree(stack.folder, ignore_errors=True)
            else:
                print(f"soak: stack folder and log kept at {stack.folder}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
