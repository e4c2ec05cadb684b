"""One update job folds the other chats whose queued updates have not started (L2_FOLD_BATCH_CHATS):
each chat still gets its own version, exactly once; what a batch cannot fold goes back to the queue;
a worker killed mid-batch loses nothing."""

from __future__ import annotations

import asyncio
import random

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, retry_key_prefix
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import L2_PENDING_COUNTS, L2_QUEUED_CHATS, L2_QUEUED_PREFIX
from app.l2.redis_state import L2RedisState
from app.l2.repository import WRITE_VERSIONS_TAG
from app.l2.service import L2Deps, update_topic_memory
from app.llm.models import LlmCall
from app.llm.offline import OfflineMemoryModel
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
from tests.support.settings import make_test_settings
from tests.support.workers import WorkerProcess, worker_process

CHATS = [f"chat-{letter}" for letter in "abcde"]


async def _queued_job(redis: ArqRedis, settings: Settings, chat: str) -> str | None:
    """The job id of the chat's queued update, if it is in arq's queue."""
    job = await redis.get(L2_QUEUED_PREFIX + chat)
    if job is None or await redis.zscore(settings.arq_queue_name, job) is None:
        return None
    return job.decode()


async def test_one_job_folds_every_queued_chat_that_has_not_started(
    l2_client: MemoryClient,
    l2_settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    recorded = await l2_client.record_messages([msg(chat, n) for chat in CHATS for n in range(THRESHOLD)])
    assert len(recorded.enqueued_job_ids) == len(CHATS)
    worker = await drain(l2_settings, max_jobs=1)  # the first job starts alone and takes the others
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    job_ids = set()
    for chat in CHATS:
        await assert_exactly_once(session_factory, chat)
        (version,) = await versions(session_factory, chat)
        assert len(version.message_ids) == THRESHOLD
        job_ids.add(version.job_id)
        assert (await l2_client.get_topic_memory(chat)).topics  # each chat has its own topics
        assert await redis.get(L2_QUEUED_PREFIX + chat) is None
    assert len(job_ids) == 1 and job_ids <= set(recorded.enqueued_job_ids)  # all by the job that ran
    assert await redis.zcard(l2_settings.arq_queue_name) == 0  # the taken jobs left the queue
    assert await redis.zcard(L2_QUEUED_CHATS) == 0
    assert await redis.hlen(L2_PENDING_COUNTS) == 0
    async with session_factory() as session:
        calls = (await session.scalars(select(LlmCall.subject_id).order_by(LlmCall.subject_id))).all()
    assert list(calls) == CHATS  # usage is accounted per chat


async def test_a_batch_is_bounded_by_l2_fold_batch_chats(
    l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_test_settings(**{**_l2_values(l2_settings), "l2_fold_batch_chats": 2})
    async with MemoryClient(settings) as client:
        await client.record_messages([msg(chat, n) for chat in CHATS for n in range(THRESHOLD)])
    worker = await drain(settings, max_jobs=1)
    assert (worker.jobs_complete, worker.jobs_failed) == (3, 0)  # 2 + 2 + 1 chats
    jobs = {(await versions(session_factory, chat))[0].job_id for chat in CHATS}
    assert len(jobs) == 3


async def test_jobs_that_started_or_ran_before_are_never_taken(
    l2_client: MemoryClient, l2_settings: Settings, redis: ArqRedis
) -> None:
    await l2_client.record_messages([msg(chat, n) for chat in CHATS[:3] for n in range(THRESHOLD)])
    job_b = await _queued_job(redis, l2_settings, "chat-b")
    job_c = await _queued_job(redis, l2_settings, "chat-c")
    assert job_b is not None and job_c is not None
    await redis.set(retry_key_prefix + job_b, 1)  # chat-b's job ran once and waits for its retry
    await redis.set(in_progress_key_prefix + job_c, 1)  # chat-c's job is running now
    state = L2RedisState(redis, l2_settings)
    taken = await state.take_queued("chat-a", 10)
    assert [chat for chat, _ in taken] == ["chat-a"]
    assert await _queued_job(redis, l2_settings, "chat-b") == job_b  # still arq's, retries intact
    for chat in ("chat-b", "chat-c"):  # neither will ever qualify: both leave the index
        assert await redis.zscore(L2_QUEUED_CHATS, chat) is None


async def test_a_taken_chat_locked_by_another_update_gets_its_own_job_back(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
) -> None:
    await l2_client.record_messages([msg("chat-b", 0)])
    await l2_client.request_topic_update("chat-b")
    await drain(l2_settings)  # chat-b has a memory row now
    await l2_client.record_messages([msg(chat, n) for chat in ("chat-a", "chat-b") for n in range(1, 4)])
    job_b = await _queued_job(redis, l2_settings, "chat-b")
    deps = L2Deps(l2_settings, session_factory, redis)
    async with holding_lock(engine, "SELECT 1 FROM topic_memories WHERE chat_id = 'chat-b' FOR UPDATE"):
        outcome = await update_topic_memory(
            deps, OfflineMemoryModel(), "chat-a", job_id="manual", batch_chats=5
        )
        assert (outcome.folded, outcome.also_folded) == (THRESHOLD, {})
        handed_back = await _queued_job(redis, l2_settings, "chat-b")
        assert handed_back is not None and handed_back != job_b  # a fresh job: the old one was taken
        assert len(await pending_ids(session_factory, "chat-b")) == THRESHOLD
    worker = await drain(l2_settings)
    assert worker.jobs_failed == 0
    assert await pending_ids(session_factory, "chat-b") == []
    for chat in ("chat-a", "chat-b"):
        await assert_exactly_once(session_factory, chat)


async def test_a_worker_killed_mid_batch_loses_nothing_and_the_next_folds_each_message_once(
    l2_client: MemoryClient,
    l2_settings: Settings,
    engine: AsyncEngine,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await l2_client.record_messages([msg(chat, n) for chat in CHATS for n in range(THRESHOLD)])
    last_of_e = (await recorded_ids(session_factory, "chat-e"))[-1]
    env = {
        "L2_QUEUE_TRIGGER_THRESHOLD": str(THRESHOLD),
        "L2_QUEUE_MAX_LEN": str(MAX_LEN),
        "WORKER_MAX_JOBS": "1",
    }
    async with holding_lock(engine, "SELECT 1 FROM chat_messages WHERE id = :id FOR UPDATE", id=last_of_e):
        with worker_process(l2_settings, env) as first:
            await wait_for_blocked_backend(engine, f"%{WRITE_VERSIONS_TAG}%")  # the batch, before its commit
            first.kill()
    for chat in CHATS:
        assert len(await pending_ids(session_factory, chat)) == THRESHOLD  # rolled back, nothing lost
    with worker_process(l2_settings, env) as second:
        await second.wait_started()  # its start-up reconcile enqueues the taken chats again
        deadline = asyncio.get_running_loop().time() + 60
        for chat in CHATS:
            while await pending_ids(session_factory, chat):
                assert asyncio.get_running_loop().time() < deadline, f"{chat} never folded"
                await asyncio.sleep(0.1)
    for chat in CHATS:
        await assert_exactly_once(session_factory, chat)
    assert await l2_client.list_failures() == []


def _l2_values(settings: Settings) -> dict[str, object]:
    return {
        "l2_queue_trigger_threshold": settings.l2_queue_trigger_threshold,
        "l2_queue_max_len": settings.l2_queue_max_len,
        "l2_lock_wait_seconds": settings.l2_lock_wait_seconds,
        "worker_max_tries": settings.worker_max_tries,
    }


async def test_three_workers_one_killed_twice_while_messages_arrive_fold_every_message_once(
    l2_client: MemoryClient, l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    chats = [f"load-{i}" for i in range(300)]
    rng = random.Random(3)
    sent = dict.fromkeys(chats, 0)
    env = {"L2_QUEUE_TRIGGER_THRESHOLD": str(THRESHOLD), "L2_QUEUE_MAX_LEN": str(MAX_LEN)}
    workers = [WorkerProcess(l2_settings, env) for _ in range(3)]
    try:
        await asyncio.gather(*(worker.wait_started() for worker in workers))
        for round_number in range(12):
            batch = []
            for chat in rng.sample(chats, 100):
                for _ in range(rng.randint(1, 6)):
                    sent[chat] += 1
                    batch.append(msg(chat, sent[chat]))
            await l2_client.record_messages(batch)
            if round_number in (4, 8):  # wherever its batches are: nothing may be lost or doubled
                workers[0].kill()
                workers[0] = WorkerProcess(l2_settings, env)
                await workers[0].wait_started()
        recorded = [chat for chat in chats if sent[chat]]
        for chat in recorded:  # fold what is below the threshold too
            await l2_client.request_topic_update(chat)
        deadline = asyncio.get_running_loop().time() + 120
        for chat in recorded:
            while await pending_ids(session_factory, chat):
                assert asyncio.get_running_loop().time() < deadline, f"{chat} never folded"
                await asyncio.sleep(0.1)
    finally:
        for worker in workers:
            worker.kill()
    for chat in recorded:
        await assert_exactly_once(session_factory, chat)
        assert len(await recorded_ids(session_factory, chat)) == sent[chat]
    assert await l2_client.list_failures() == []
