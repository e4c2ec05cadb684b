"""Exactly once, in order: messages recorded while an update runs, the database connection of a
running update killed, and Redis flushed under a running update. Each update is paused at a known
point by holding a row lock it needs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import L2_DUE_AT, L2_PENDING_COUNTS
from app.l2.repository import WRITE_VERSIONS_TAG
from tests.integration.l2.conftest import THRESHOLD
from tests.support.l2 import (
    assert_exactly_once,
    drain,
    holding_lock,
    msg,
    pending_ids,
    recorded_ids,
    versions,
    wait_for_blocked_backend,
)
from tests.support.workers import burst_worker

LOCK_MESSAGE = "SELECT 1 FROM chat_messages WHERE id = :id FOR UPDATE"
UPDATE_BLOCKED = f"%{WRITE_VERSIONS_TAG}%"  # after the model call, before the commit


async def test_messages_recorded_while_an_update_runs_are_folded_by_the_next_one(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    first = await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])
    assert len(first.enqueued_job_ids) == 1
    first_ids = await recorded_ids(session_factory, "chat-a")
    worker = burst_worker(l2_settings)
    async with holding_lock(engine, LOCK_MESSAGE, id=first_ids[-1]):
        running = asyncio.create_task(worker.main())
        await wait_for_blocked_backend(engine, UPDATE_BLOCKED)  # the update holds the chat, mid-way
        during = await l2_client.record_messages([msg("chat-a", n) for n in range(10, 10 + THRESHOLD + 1)])
        assert len(during.enqueued_job_ids) == 1  # a follow-up is queued while the first one runs
    await running
    await worker.close()
    assert worker.jobs_failed == 0
    chat_versions = await versions(session_factory, "chat-a")
    assert [v.message_ids for v in chat_versions][0] == first_ids  # the first update took its snapshot only
    await assert_exactly_once(session_factory, "chat-a")
    assert await pending_ids(session_factory, "chat-a") == []


async def test_the_database_connection_dying_mid_update_rolls_back_and_the_retry_folds_once(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])
    ids = await recorded_ids(session_factory, "chat-a")
    worker = burst_worker(l2_settings)
    async with holding_lock(engine, LOCK_MESSAGE, id=ids[-1]) as connection:
        running = asyncio.create_task(worker.main())
        pid = await wait_for_blocked_backend(engine, UPDATE_BLOCKED)
        assert (await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar()
    await running
    await worker.close()
    assert (worker.jobs_retried, worker.jobs_failed) == (1, 0)  # transient: retried after backoff
    (version,) = await versions(session_factory, "chat-a")
    assert version.job_try == 2
    await assert_exactly_once(session_factory, "chat-a")
    assert await l2_client.list_failures() == []


async def test_redis_flushed_while_an_update_runs_loses_nothing(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])
    ids = await recorded_ids(session_factory, "chat-a")
    worker = burst_worker(l2_settings)
    async with holding_lock(engine, LOCK_MESSAGE, id=ids[-1]):
        running = asyncio.create_task(worker.main())
        await wait_for_blocked_backend(engine, UPDATE_BLOCKED)
        late = await l2_client.record_messages([msg("chat-a", 50)])  # its follow-up job is queued...
        assert len(late.enqueued_job_ids) == 1
        await redis.flushdb()  # ...and lost here, with every count, due time and marker
    await running
    await worker.close()
    assert worker.jobs_failed == 0
    assert [v.message_ids for v in await versions(session_factory, "chat-a")] == [ids]
    (late_id,) = await pending_ids(session_factory, "chat-a")
    assert await redis.zscore(L2_DUE_AT, "chat-a") is not None  # the update kept the chat indexed
    await l2_client.reconcile_l2()
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") == b"1"
    later = datetime.now(UTC) + timedelta(minutes=l2_settings.l2_force_update_after_minutes, seconds=1)
    await drain(l2_settings, ctx={"clock": lambda: later})  # its start-up reconcile finds it due
    assert await pending_ids(session_factory, "chat-a") == []
    await assert_exactly_once(session_factory, "chat-a")
    assert (await versions(session_factory, "chat-a"))[-1].message_ids == [late_id]
