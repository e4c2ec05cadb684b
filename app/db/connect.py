"""Wait for the database with bounded retries, so start-up fails clearly instead of hanging."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ConfigError

logger = logging.getLogger(__name__)
RETRY_DELAY_SECONDS = 1.0


async def wait_for_database(engine: AsyncEngine, retries: int, where: str) -> None:
    """Try `retries + 1` times, one second apart; then raise `ConfigError` naming the server."""
    for attempt in range(retries + 1):
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return
        except (OSError, OperationalError, InterfaceError, DBAPIError) as exc:
            if attempt == retries:
                raise ConfigError(
                    f"database {where} does not answer after {retries + 1} tries: {exc}"
                ) from exc
            logger.warning("database %s not ready (try %d/%d): %s", where, attempt + 1, retries + 1, exc)
            await asyncio.sleep(RETRY_DELAY_SECONDS)
