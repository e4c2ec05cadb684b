"""Test settings: the configured servers, but a dedicated database and Redis db that tests may wipe."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from app.config import Settings, load_settings

TEST_POSTGRES_DB = os.environ.get("TEST_POSTGRES_DB", "memory_worker_test")
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "9"))


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def make_test_settings(
    postgres_db: str = TEST_POSTGRES_DB, redis_db: int = TEST_REDIS_DB, **overrides: Any
) -> Settings:
    """Settings from env (servers, credentials), pointed at database `postgres_db` and Redis db
    `redis_db`, whether the servers are given as parts or as DATABASE_URL / REDIS_URL."""
    base = load_settings()
    update: dict[str, Any] = {"postgres_db": postgres_db, "redis_db": redis_db}
    if base.database_url is not None:
        database_url = base.database_url.get_secret_value()
        update["database_url"] = SecretStr(_with_path(database_url, f"/{postgres_db}"))
    if base.redis_url is not None:
        update["redis_url"] = SecretStr(_with_path(base.redis_url.get_secret_value(), f"/{redis_db}"))
    # long-task tests drive retries with a fake clock and explicit kicks: a deferred run at the real
    # backoff time would only make a burst worker wait for it (test_retry_kick turns it on)
    update["long_task_retry_kick_seconds"] = 0
    update.update(overrides)
    return load_settings(**update)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a child process (a worker) use `settings`' servers."""
    env = dict(os.environ)
    env["POSTGRES_DB"] = settings.postgres_db
    env["REDIS_DB"] = str(settings.redis_db)
    if settings.database_url is not None:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    if settings.redis_url is not None:
        env["REDIS_URL"] = settings.redis_url.get_secret_value()
    return env


async def ensure_database(settings: Settings, name: str, *, recreate: bool = False) -> None:
    """Create database `name` on the configured server (dropping it first when `recreate`)."""
    url = make_test_settings("postgres").sqlalchemy_url.replace("postgresql+asyncpg", "postgresql", 1)
    connection = await asyncpg.connect(url)
    try:
        if recreate:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
