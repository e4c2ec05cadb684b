"""Real `arq` worker processes: SIGKILL in the middle of an update loses and duplicates nothing,
and several workers never run two updates of one chat at the same time."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import JOB_UPDATE_TOPIC_MEMORY
from app.l2.repository import WRITE_VERSIONS_TAG
from tests.integration.l2.conftest import MAX_LEN, THRESHOLD
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
from tests.support.workers import WorkerProcess, worker_process

pytestmark = pytest.mark.slow
WORKER_ENV = {
    "L2_QUEUE_TRIGGER_THRESHOLD": str(THRESHOLD),
    "L2_QUEUE_MAX_LEN": str(MAX_LEN),
    "L2_LOCK_WAIT_SECONDS": "20",
}


async def _wait_until_folded(
    session_factory: async_sessionmaker[AsyncSession], chats: list[str], timeout: float = 60.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    for chat in chats:
        while await pending_ids(session_factory, chat):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{chat} still has pending messages")
            await asyncio.sleep(0.1)


async def _no_backend_waits(engine: AsyncEngine, timeout: float = 30.0) -> None:
    sql = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as connection:
            if (await connection.execute(sql)).scalar_one() == 0:
                return
        assert asyncio.get_running_loop().time() < deadline, "a killed update still waits"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("lock_sql", "blocked_query"),
    [
        # before anything: waiting for the chat's row lock
        (
            "SELECT 1 FROM topic_memories WHERE chat_id = 'chat-a' FOR UPDATE",
            "%INSERT INTO topic_memories%",
        ),
        # after the model call and the version insert, before the commit
        (
            "SELECT 1 FROM chat_messages WHERE id = :id FOR UPDATE",
            f"%{WRITE_VERSIONS_TAG}%",
        ),
    ],
    ids=["waiting-for-the-chat", "after-the-model-before-commit"],
)
async def test_sigkill_during_an_update_loses_nothing_and_folds_each_message_once(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    lock_sql: str,
    blocked_query: str,
) -> None:
    await l2_client.record_messages([msg("chat-a", 0)])
    assert await l2_client.request_topic_update("chat-a")
    await drain(l2_settings)  # version 1, so the memory row exists
    await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD + 1)])  # enqueues
    ids = await recorded_ids(session_factory, "chat-a")
    async with holding_lock(engine, lock_sql, id=ids[-1]):
        with worker_process(l2_settings, WORKER_ENV) as first:
            await wait_for_blocked_backend(engine, blocked_query)
            first.kill()
    await _no_backend_waits(engine)  # the dead worker's transaction is gone, rolled back
    assert len(await pending_ids(session_factory, "chat-a")) == THRESHOLD
    assert len(await versions(session_factory, "chat-a")) == 1
    with worker_process(l2_settings, WORKER_ENV) as second:
        await second.wait_started()  # its start-up reconcile enqueues the chat again
        await _wait_until_folded(session_factory, ["chat-a"])
    await assert_exactly_once(session_factory, "chat-a")
    assert await l2_client.list_failures() == []


async def test_several_workers_never_update_one_chat_at_the_same_time(
    l2_client: MemoryClient, l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    chats = [f"chat-{i}" for i in range(6)]
    rng = random.Random(7)
    workers = [WorkerProcess(l2_settings, WORKER_ENV) for _ in range(3)]
    try:
        await asyncio.gather(*(w.wait_started() for w in workers))
        for batch in range(8):
            await l2_client.record_messages(
                [msg(chat, batch * 10 + n) for chat in chats for n in range(rng.randint(1, 6))]
            )
            for chat in chats:  # services enqueueing on their own, on top of the triggers
                for _ in range(3):
                    await l2_client.enqueue(JOB_UPDATE_TOPIC_MEMORY, chat)
        for chat in chats:  # fold what is below the threshold too
            await l2_client.enqueue(JOB_UPDATE_TOPIC_MEMORY, chat)
        await _wait_until_folded(session_factory, chats)
    finally:
        for w in workers:
            w.kill()
    for chat in chats:
        await assert_exactly_once(session_factory, chat)
        chat_versions = await versions(session_factory, chat)
        for before, after in zip(chat_versions, chat_versions[1:], strict=False):
            held_until = before.started_at.timestamp() + before.duration_ms / 1000
            assert after.started_at.timestamp() >= held_until, f"{chat}: v{after.version} overlapped"
    assert await l2_client.list_failures() == []
