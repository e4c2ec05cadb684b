"""Recording: durable first, duplicates are no-ops, the threshold enqueues one update at once,
bad input is rejected whole with the field named, and a Redis outage loses nothing."""

from __future__ import annotations

from datetime import datetime

import pytest
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import L2_DUE_AT, L2_PENDING_COUNTS, L2_QUEUED_PREFIX
from app.errors import ValidationError
from app.l2.models import ChatMessage
from tests.integration.l2.conftest import THRESHOLD
from tests.support.l2 import BASE_TIME, msg, recorded_ids


async def _count(session_factory: async_sessionmaker[AsyncSession]) -> int:
    async with session_factory() as session:
        return int((await session.execute(select(func.count()).select_from(ChatMessage))).scalar_one())


async def _queued_jobs(redis: ArqRedis, settings: Settings) -> list[bytes]:
    return list(await redis.zrange(settings.arq_queue_name, 0, -1))


async def test_record_message_stores_it_and_counts_it(
    l2_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    result = await l2_client.record_message(
        "chat-a", "ext-1", "Hello there", sent_at=BASE_TIME, user_id="u1", user_name="Ann", role="user"
    )
    assert (result.recorded, result.duplicates, result.enqueued_job_ids, result.scheduled) == (1, 0, [], True)
    async with session_factory() as session:
        row = (await session.execute(select(ChatMessage))).scalar_one()
    assert (row.chat_id, row.group_id, row.external_id, row.user_name, row.content) == (
        "chat-a",
        "chat-a",  # group defaults to the chat
        "ext-1",
        "Ann",
        "Hello there",
    )
    assert row.topic_version_id is None
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") == b"1"
    assert await redis.zscore(L2_DUE_AT, "chat-a") is not None  # never updated: due at the next scan


async def test_recording_the_same_message_twice_is_a_no_op(
    l2_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    first = await l2_client.record_messages([msg("chat-a", 1), msg("chat-a", 2), msg("chat-a", 1)])
    again = await l2_client.record_messages([msg("chat-a", 2)])
    assert (first.recorded, first.duplicates) == (2, 1)
    assert (again.recorded, again.duplicates) == (0, 1)
    assert await _count(session_factory) == 2
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") == b"2"


async def test_crossing_the_threshold_enqueues_exactly_one_update(
    l2_client: MemoryClient, l2_settings: Settings, redis: ArqRedis
) -> None:
    below = await l2_client.record_messages([msg("chat-a", n) for n in range(1, THRESHOLD)])
    assert below.enqueued_job_ids == []
    crossing = await l2_client.record_message("chat-a", "m99", "the one that crosses", sent_at=BASE_TIME)
    assert len(crossing.enqueued_job_ids) == 1
    job_id = crossing.enqueued_job_ids[0]
    assert await redis.get(L2_QUEUED_PREFIX + "chat-a") == job_id.encode()
    more = await l2_client.record_messages([msg("chat-a", n) for n in range(100, 110)])
    assert more.enqueued_job_ids == []  # one update is queued already
    assert await l2_client.request_topic_update("chat-a") is None
    assert await _queued_jobs(redis, l2_settings) == [job_id.encode()]


async def test_a_batch_over_several_chats_enqueues_one_update_per_chat_at_threshold(
    l2_client: MemoryClient, l2_settings: Settings, redis: ArqRedis
) -> None:
    batch = [msg(chat, n) for chat in ("c1", "c2", "c3") for n in range(THRESHOLD if chat != "c3" else 1)]
    result = await l2_client.record_messages(batch)
    assert result.recorded == len(batch)
    assert len(result.enqueued_job_ids) == 2  # c1 and c2 reached the threshold, c3 did not
    assert len(await _queued_jobs(redis, l2_settings)) == 2


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ({"chat_id": ""}, "messages[1].chat_id", "must not be empty"),
        ({"message_id": "x" * 201}, "messages[1].message_id", "at most 200 characters"),
        ({"role": "bot"}, "messages[1].role", "must be one of user, assistant, system"),
        ({"content": b"bytes"}, "messages[1].content", "must be text (str), not bytes"),
        ({"content": "bad \ud800 surrogate"}, "messages[1].content", "not valid UTF-8"),
        ({"content": "é" * 9000}, "messages[1].content", "18000 bytes of UTF-8, more than MESSAGE_MAX_BYTES"),
        ({"sent_at": datetime(2026, 1, 1)}, "messages[1].sent_at", "must be timezone-aware"),
        ({"user_id": 42}, "messages[1].user_id", "must be a string, not int"),
        ({"colour": "red"}, "messages[1].colour", "is not a message field"),
    ],
)
async def test_an_invalid_message_rejects_the_whole_batch_naming_index_and_field(
    l2_client: MemoryClient,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    bad: dict[str, object],
    field: str,
    problem: str,
) -> None:
    good = {"chat_id": "chat-a", "message_id": "m1", "content": "fine", "sent_at": BASE_TIME}
    with pytest.raises(ValidationError) as raised:
        await l2_client.record_messages([good, {**good, "message_id": "m2", **bad}])
    assert raised.value.field == field
    assert problem in str(raised.value)
    assert await _count(session_factory) == 0  # nothing half-written
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") is None


async def test_an_empty_batch_is_rejected(l2_client: MemoryClient) -> None:
    with pytest.raises(ValidationError, match="messages: must contain at least one message"):
        await l2_client.record_messages([])


async def test_redis_down_after_the_commit_loses_nothing_and_reconcile_schedules_it(
    l2_settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    async with MemoryClient(l2_settings) as client:
        real_redis = client._redis
        dead = ArqRedis(host="127.0.0.1", port=1, socket_connect_timeout=1)  # nothing listens on port 1
        client._redis = dead
        try:
            result = await client.record_messages([msg("chat-a", n) for n in range(1, 5)])
        finally:
            client._redis = real_redis
            await dead.aclose()
        assert (result.recorded, result.scheduled, result.enqueued_job_ids) == (4, False, [])
        assert len(await recorded_ids(session_factory, "chat-a")) == 4  # durable in Postgres
        assert await redis.hget(L2_PENDING_COUNTS, "chat-a") is None  # Redis never heard of them
        report = await client.reconcile_l2()
    assert (report.pending_chats, report.enqueued) == (1, 1)
    assert await redis.hget(L2_PENDING_COUNTS, "chat-a") == b"4"
