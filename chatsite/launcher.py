"""Start every process of the platform on one machine: ``make run``.

Checks the web port and Redis first, starts the embedded Redis when
``REDIS_URL`` is unset, then runs the Procfile under the supervisor in
``chatsite.supervisor``, which starts again any process that dies, the
embedded Redis included. Ctrl-C (or SIGTERM) stops every process, the
embedded Redis last, and leaves none behind; so does the launcher's own
death, through each child's death signal. Exits non-zero with a one-line
reason when it cannot start.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
from pathlib import Path

import redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


class LaunchError(RuntimeError):
    pass


def port_check(host: str, port: int) -> None:
    """Raise LaunchError when nothing could listen on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Match the server's own bind options so a port in TIME_WAIT is not
        # mistaken for a busy one.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise LaunchError(
                f"port {port} on {host} is already in use ({exc.strerror}); "
                "stop the other server or set WEB_PORT"
            ) from None


def redis_check(url: str) -> None:
    """Raise LaunchError when the Redis at url does not answer."""
    from chatsite.redis_url import redis_url_display

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise LaunchError(
            f"cannot reach Redis at REDIS_URL={redis_url_display(url)} ({exc})"
        ) from None
    finally:
        client.close()


#: The open-files limit the processes get when the system allows it: each
#: WebSocket holds a file descriptor in the web process.
OPEN_FILES_WANTED = 65536


def open_files_raise() -> int:
    """Raise the soft open-files limit towards the hard one (children
    inherit it); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < ceiling:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
            soft = ceiling
        except (ValueError, OSError):
            pass
    return soft


def stop_timeout(drain_timeout: float) -> float:
    """How long a stop waits before it kills what is left: long enough
    for an inference worker to finish its answers (its drain), plus a
    margin for it to exit; never under the supervisor's own 10 s."""
    from chatsite.supervisor import STOP_TIMEOUT

    return max(STOP_TIMEOUT, drain_timeout + 5.0)


def run(procfile: Path, *, check_port: bool = True) -> int:
    from django.conf import settings

    from chatsite.embedded_redis import EmbeddedRedis, EmbeddedRedisError
    from chatsite.supervisor import ProcfileError, Supervisor, procfile_parse

    try:
        entries = procfile_parse(procfile)
    except ProcfileError as exc:
        raise LaunchError(str(exc)) from None
    open_files_raise()
    if check_port:
        port_check(settings.WEB_HOST, settings.WEB_PORT)

    embedded: EmbeddedRedis | None = None
    if os.environ.get("REDIS_URL"):
        redis_url = os.environ["REDIS_URL"]
        redis_check(redis_url)
    else:
        embedded = EmbeddedRedis(settings.EMBEDDED_REDIS_DIR, settings.EMBEDDED_REDIS_SOCKET)
        try:
            redis_url = embedded.start()
        except EmbeddedRedisError as exc:
            raise LaunchError(str(exc)) from None

    # From here on, whatever ends the run (a Ctrl-C before the supervisor
    # takes the signals over included) stops the embedded Redis last.
    try:
        env = dict(os.environ)
        env.update(
            REDIS_URL=redis_url,
            WEB_HOST=settings.WEB_HOST,
            WEB_PORT=str(settings.WEB_PORT),
            PYTHONUNBUFFERED="1",
        )
        # Children find the project's executables (daphne, celery) on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

        host = settings.WEB_HOST if ":" not in settings.WEB_HOST else f"[{settings.WEB_HOST}]"
        print(
            f"\n  Chat platform starting on http://{host}:{settings.WEB_PORT}/\n"
            f"  Redis: {'embedded, ' + redis_url if embedded else 'REDIS_URL'}\n"
            "  Create a staff user:  .venv/bin/python manage.py createsuperuser\n"
            "  Stop everything:      Ctrl-C\n",
            flush=True,
        )

        supervisor = Supervisor(
            entries,
            env=env,
            cwd=procfile.parent,
            embedded=embedded,
            stop_timeout=stop_timeout(settings.INFERENCE_DRAIN_TIMEOUT),
        )
        supervisor.run()
    finally:
        if embedded is not None:
            embedded.stop()
    print("  All processes stopped.", flush=True)
    # The supervisor returns only when asked to stop: a clean exit.
    return 0


def main(argv: list[str] | None = None) -> int:
    import django
    from django.conf import settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procfile", type=Path, default=None, help="Procfile to run")
    args = parser.parse_args(argv)
    django.setup()
    procfile = (args.procfile or Path(settings.BASE_DIR) / "Procfile").resolve()
    try:
        return run(procfile)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
