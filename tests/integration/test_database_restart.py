"""A database restart (every connection killed) costs a caller nothing: the pool is recycled and
recording retries once, so no message is lost and no error reaches the service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.client import MemoryClient
from app.config import Settings


async def _kill_other_connections(engine: AsyncEngine, database: str) -> int:
    async with engine.connect() as connection:
        killed = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :database AND pid <> pg_backend_pid()"
            ),
            {"database": database},
        )
    return int(killed or 0)


async def test_recording_survives_killed_pool_connections(
    settings: Settings, client: MemoryClient, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    await client.record_message("chat-r", "m1", "before the restart", sent_at=now)
    assert await _kill_other_connections(engine, settings.postgres_db) >= 1
    result = await client.record_message("chat-r", "m2", "after the restart", sent_at=now)
    assert result.recorded == 1
    memory = await client.get_topic_memory("chat-r")
    assert memory.pending_count == 2


async def test_concurrent_callers_all_survive_a_restart(
    settings: Settings, client: MemoryClient, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)

    async def record(prefix: str, index: int) -> int:
        result = await client.record_message(f"chat-{index}", f"{prefix}-{index}", "text", sent_at=now)
        return result.recorded

    assert sum(await asyncio.gather(*(record("before", i) for i in range(8)))) == 8  # several pooled
    assert await _kill_other_connections(engine, settings.postgres_db) >= 2
    assert sum(await asyncio.gather(*(record("after", i) for i in range(8)))) == 8
    for index in range(8):
        assert (await client.get_topic_memory(f"chat-{index}")).pending_count == 2
