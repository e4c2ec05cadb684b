"""Pre-start: wait for the database, create it if it is missing, apply the migrations.

    python -m app.prestart

Run before the worker (`make run`, the compose `migrate` service). Safe to run any number of times.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import asyncpg
from alembic import command
from sqlalchemy.engine import make_url

from app.config import Settings, load_settings
from app.db.connect import wait_for_database
from app.db.engine import create_engine
from app.db.schema_check import alembic_config
from app.errors import AppError
from app.logging_setup import configure_logging

logger = logging.getLogger("app.prestart")


async def ensure_database_exists(settings: Settings) -> None:
    """Create the configured database when the server has none of that name and we may create it."""
    url = make_url(settings.sqlalchemy_url)
    name = url.database
    maintenance = url.set(drivername="postgresql", database="postgres")
    try:
        connection = await asyncpg.connect(maintenance.render_as_string(hide_password=False))
    except (OSError, asyncpg.PostgresError) as exc:
        logger.info("cannot reach the maintenance database to check %r exists (%s); going on", name, exc)
        return
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
            logger.info("created database %r", name)
    except asyncpg.InsufficientPrivilegeError:
        logger.info("no right to create database %r; assuming the operator did", name)
    finally:
        await connection.close()


async def _prepare(settings: Settings) -> None:
    await ensure_database_exists(settings)
    engine = create_engine(settings)
    try:
        await wait_for_database(engine, settings.db_connect_retries, settings.database_display)
    finally:
        await engine.dispose()


def main() -> None:
    configure_logging()
    try:
        settings = load_settings()
        asyncio.run(_prepare(settings))
    except AppError as exc:
        print(f"memory-worker: {exc}", file=sys.stderr)  # noqa: T201 - the one line an operator must see
        raise SystemExit(2) from None
    config = alembic_config()
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    logger.info("database %s is at the latest migration", settings.database_display)


if __name__ == "__main__":
    main()
