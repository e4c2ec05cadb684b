"""Redis is disposable: after FLUSHDB, reconcile (on demand, at worker start, as a job) rebuilds
every chat's pending state from Postgres and nothing is lost."""

from __future__ import annotations

from datetime import UTC, datetime

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import JOB_RECONCILE_L2, L2_DUE_AT, L2_LAST_UPDATE, L2_PENDING_COUNTS
from tests.integration.l2.conftest import THRESHOLD
from tests.support.l2 import assert_exactly_once, drain, msg, pending_ids


async def _state(redis: ArqRedis) -> tuple[dict[bytes, bytes], set[bytes], dict[bytes, bytes]]:
    due = {member for member, _ in await redis.zrange(L2_DUE_AT, 0, -1, withscores=True)}
    return await redis.hgetall(L2_PENDING_COUNTS), due, await redis.hgetall(L2_LAST_UPDATE)


async def _scenario(client: MemoryClient, settings: Settings) -> None:
    """'old' was updated and has 2 pending (not due yet); 'busy' is over the threshold; 'new' was
    never updated."""
    await client.record_messages([msg("old", n) for n in range(1, THRESHOLD + 1)])
    await drain(settings)
    await client.record_messages([msg("old", n) for n in range(10, 12)])
    await client.record_messages([msg("busy", n) for n in range(1, THRESHOLD + 2)])
    await client.record_messages([msg("new", 1)])


async def test_reconcile_after_flushdb_rebuilds_the_state_and_nothing_is_lost(
    l2_client: MemoryClient,
    l2_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    await _scenario(l2_client, l2_settings)
    counts, due, last = await _state(redis)
    old_due = await redis.zscore(L2_DUE_AT, "old")
    await redis.flushdb()  # the queued update of 'busy' is gone with it
    report = await l2_client.reconcile_l2()
    assert (report.pending_chats, report.updated_chats) == (3, 1)
    assert report.enqueued == 2  # 'busy' (threshold) and 'new' (never updated); 'old' is not due yet
    assert await _state(redis) == (counts, due, last)
    assert await redis.zscore(L2_DUE_AT, "old") == old_due  # last update + 60 min, from Postgres
    await drain(l2_settings)
    assert (
        await pending_ids(session_factory, "busy") == [] and await pending_ids(session_factory, "new") == []
    )
    assert len(await pending_ids(session_factory, "old")) == 2  # due later, still counted and indexed
    assert await redis.hget(L2_PENDING_COUNTS, "old") == b"2"
    for chat in ("busy", "new"):
        await assert_exactly_once(session_factory, chat)


async def test_a_worker_start_reconciles_a_flushed_redis(
    l2_client: MemoryClient,
    l2_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    await _scenario(l2_client, l2_settings)
    await redis.flushdb()
    await drain(l2_settings)  # nothing queued: only the start-up reconcile finds the work
    assert (
        await pending_ids(session_factory, "busy") == [] and await pending_ids(session_factory, "new") == []
    )
    later = datetime.now(UTC).replace(year=2099)
    await drain(l2_settings, ctx={"clock": lambda: later})  # by then 'old' is due as well
    assert await pending_ids(session_factory, "old") == []
    for chat in ("old", "busy", "new"):
        await assert_exactly_once(session_factory, chat)


async def test_the_reconcile_job_can_be_enqueued_on_demand(
    l2_client: MemoryClient, l2_settings: Settings, redis: ArqRedis
) -> None:
    await _scenario(l2_client, l2_settings)
    await redis.flushdb()
    job = await l2_client.enqueue(JOB_RECONCILE_L2)
    assert job is not None
    await drain(l2_settings)
    result = await job.result(timeout=1)
    assert (result["pending_chats"], result["updated_chats"]) == (3, 1)
    assert await redis.hget(L2_PENDING_COUNTS, "old") == b"2"
