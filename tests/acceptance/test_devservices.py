"""The two-command start's service fallback, run as a user would: `python -m app.devservices run -- ...`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import asyncio, asyncpg, redis
from app.config import load_settings
settings = load_settings()
async def main():
    connection = await asyncpg.connect(settings.sqlalchemy_url.replace("postgresql+asyncpg", "postgresql"))
    version = await connection.fetchval("SHOW server_version")
    await connection.close()
    client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
    pong = await client.ping()
    await client.aclose()
    print("postgres", version, "redis", pong)
asyncio.run(main())
"""


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no service settings inherited from the test run."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("POSTGRES_", "REDIS_", "DATABASE_URL", "MEMORY_WORKER_"))
    }
    env.update(extra)
    return env


def _run(tmp_path: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.devservices", "run", "--", *command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_forced_embedded_servers_are_real_and_keep_data_under_dot_data(tmp_path: Path) -> None:
    done = _run(tmp_path, _clean_env(MEMORY_WORKER_EMBEDDED="1"), sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    assert "started an embedded PostgreSQL" in done.stderr
    assert "started an embedded Redis" in done.stderr
    assert done.stdout.startswith("postgres ") and done.stdout.strip().endswith("redis True")
    assert (tmp_path / ".data" / "postgres" / "PG_VERSION").is_file()
    assert (tmp_path / ".data" / "redis").is_dir()


def test_child_exit_code_is_passed_through(tmp_path: Path) -> None:
    done = _run(tmp_path, _clean_env(MEMORY_WORKER_EMBEDDED="1"), sys.executable, "-c", "raise SystemExit(7)")
    assert done.returncode == 7


def test_configured_server_that_does_not_answer_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    done = _run(
        tmp_path, _clean_env(REDIS_HOST="127.0.0.1", REDIS_PORT="1"), sys.executable, "-c", "print('ran')"
    )
    assert done.returncode != 0
    assert "redis at 127.0.0.1:1 is configured explicitly but does not answer" in done.stderr
    assert "ran" not in done.stdout
    assert not (tmp_path / ".data" / "redis").exists()
