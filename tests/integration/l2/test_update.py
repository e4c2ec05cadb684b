"""The update job end to end with a burst worker: versions, backlogs in successive runs, direct
enqueues by services, the time-based scan, an unknown chat, and transient faults with backoff."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from arq import cron
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import CRON_L2_SCAN, JOB_UPDATE_TOPIC_MEMORY, L2_DUE_AT, L2_PENDING_COUNTS
from app.errors import NotFoundError
from app.failures.models import JobFailure
from app.l2.jobs import cron_l2_scan
from app.l2.models import TopicMemory
from app.llm.models import LlmCall
from tests.integration.l2.conftest import MAX_LEN, THRESHOLD
from tests.support.l2 import assert_exactly_once, drain, holding_lock, msg, pending_ids


async def test_threshold_update_folds_the_messages_into_a_new_version(
    l2_client: MemoryClient,
    l2_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    await l2_client.record_messages(
        [
            msg("chat-a", 1, "We should deploy the billing service on Friday.", user_name="Ann"),
            msg("chat-a", 2, "The billing deploy needs the database migration first.", user_name="Bob"),
            msg("chat-a", 3, "Agreed: migration Thursday, billing deploy Friday.", user_name="Ann"),
        ]
    )
    worker = await drain(l2_settings)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    memory = await l2_client.get_topic_memory("chat-a", history=True)
    assert (memory.version, memory.message_count, memory.pending_count) == (1, 3, 0)
    assert [t.id for t in memory.topics] == ["t1"]
    topic = memory.topics[0]
    assert "billing" in topic.title.lower()
    assert topic.participants == ["Ann", "Bob"]
    assert topic.message_count == 3
    assert memory.history is not None and len(memory.history) == 1
    version = memory.history[0]
    assert version.summarizer == "offline" and version.job_try == 1 and version.duration_ms >= 0
    assert len(version.message_ids) == 3
    await assert_exactly_once(session_factory, "chat-a")
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") is None
    assert await redis.zscore(L2_DUE_AT, "chat-a") is None  # nothing pending: not due
    async with session_factory() as session:
        calls = (await session.scalars(select(LlmCall))).all()
    assert [(c.provider, c.purpose, c.subject_id, c.job_id) for c in calls] == [
        ("offline", "topics", "chat-a", version.job_id)
    ]


async def test_a_backlog_is_folded_to_the_end_in_successive_runs(
    l2_client: MemoryClient,
    l2_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, 2 * MAX_LEN + 3)])  # 12 messages
    worker = await drain(l2_settings)
    assert worker.jobs_complete == 3  # 5 + 5 + 2: the tail of a due backlog does not wait for its time
    history = (await l2_client.get_topic_memory("chat-a", history=True)).history or []
    assert [len(v.message_ids) for v in reversed(history)] == [MAX_LEN, MAX_LEN, 2]
    assert await pending_ids(session_factory, "chat-a") == []
    await assert_exactly_once(session_factory, "chat-a")
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") is None
    assert await redis.zscore(L2_DUE_AT, "chat-a") is None


async def test_below_the_threshold_new_messages_wait_for_their_time(
    l2_client: MemoryClient, l2_settings: Settings, redis: ArqRedis
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])
    await drain(l2_settings)  # version 1
    await l2_client.record_messages([msg("chat-a", n) for n in range(10, 10 + THRESHOLD - 1)])  # below it
    worker = await drain(l2_settings)
    assert worker.jobs_complete == 0
    assert (await l2_client.get_topic_memory("chat-a")).pending_count == THRESHOLD - 1
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") == str(THRESHOLD - 1).encode()
    due = await redis.zscore(L2_DUE_AT, "chat-a")
    assert due is not None and due > datetime.now(UTC).timestamp() + 59 * 60  # last update + 60 min


async def test_the_scan_cron_enqueues_chats_due_by_time_only(
    l2_client: MemoryClient, l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])
    await drain(l2_settings)  # version 1; chat-a's last update is now
    await l2_client.record_messages([msg("chat-a", 50), msg("new-chat", 1)])  # both below the threshold
    scan = cron(cron_l2_scan, name=CRON_L2_SCAN, run_at_startup=True)
    now = datetime.now(UTC)
    await drain(l2_settings, cron_jobs=[scan], ctx={"clock": lambda: now})
    assert await pending_ids(session_factory, "new-chat") == []  # never updated: due at once
    assert len(await pending_ids(session_factory, "chat-a")) == 1  # updated a moment ago: not yet due
    later = now + timedelta(minutes=l2_settings.l2_force_update_after_minutes, seconds=1)
    await drain(l2_settings, cron_jobs=[scan], ctx={"clock": lambda: later})
    assert await pending_ids(session_factory, "chat-a") == []
    await assert_exactly_once(session_factory, "chat-a")


async def test_services_may_enqueue_the_update_as_often_as_they_like(
    l2_client: MemoryClient, l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD)])  # below threshold
    jobs = [await l2_client.enqueue(JOB_UPDATE_TOPIC_MEMORY, "chat-a") for _ in range(5)]
    assert all(job is not None for job in jobs)
    worker = await drain(l2_settings)
    # 5 + 1: the worker's start-up reconcile also enqueues this never-updated chat
    assert (worker.jobs_complete, worker.jobs_failed) == (6, 0)
    assert (await l2_client.get_topic_memory("chat-a")).version == 1  # the others found nothing pending
    assert await l2_client.list_failures() == []
    await assert_exactly_once(session_factory, "chat-a")


async def test_an_unknown_chat_fails_once_with_a_clear_reason(
    l2_client: MemoryClient, l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    job = await l2_client.enqueue(JOB_UPDATE_TOPIC_MEMORY, "no-such-chat")
    assert job is not None
    worker = await drain(l2_settings)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (0, 1, 0)
    failures = await l2_client.list_failures(subject_kind="chat", subject_id="no-such-chat")
    assert len(failures) == 1
    failure = failures[0]
    assert (failure.function, failure.error_type, failure.job_try) == (
        JOB_UPDATE_TOPIC_MEMORY,
        "NotFoundError",
        1,
    )
    assert (
        failure.reason
        == "chat 'no-such-chat' has no recorded messages and no topic memory: nothing to update"
    )
    async with session_factory() as session:
        assert (await session.execute(select(func.count()).select_from(TopicMemory))).scalar_one() == 0
    with pytest.raises(NotFoundError):
        await l2_client.get_topic_memory("no-such-chat")


async def test_a_lock_held_too_long_retries_with_backoff_then_fails_visibly_and_keeps_messages(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])
    await l2_client.enqueue(JOB_UPDATE_TOPIC_MEMORY, "chat-a")  # creates the memory row, folds
    await drain(l2_settings)
    await l2_client.record_messages([msg("chat-a", n) for n in range(10, 10 + THRESHOLD)])
    caplog.set_level(logging.WARNING, logger="app.jobs")
    lock = "SELECT 1 FROM topic_memories WHERE chat_id = 'chat-a' FOR UPDATE"
    async with holding_lock(engine, lock):  # another writer that never lets go
        worker = await drain(l2_settings)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, l2_settings.worker_max_tries - 1)
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert [m.rsplit("retrying in ", 1)[1] for m in retries] == ["1.0 s", "2.0 s"]  # exponential
    failures = await l2_client.list_failures(subject_id="chat-a")
    assert len(failures) == 1 and failures[0].job_try == l2_settings.worker_max_tries
    assert failures[0].error_type == "TransientError"
    assert "lock wait timed out" in failures[0].reason
    assert len(await pending_ids(session_factory, "chat-a")) == THRESHOLD  # still pending
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") == str(THRESHOLD).encode()
    assert await l2_client.request_topic_update("chat-a") is not None  # the next trigger works
    await drain(l2_settings)
    await assert_exactly_once(session_factory, "chat-a")
    async with session_factory() as session:
        assert (await session.execute(select(func.count()).select_from(JobFailure))).scalar_one() == 1
