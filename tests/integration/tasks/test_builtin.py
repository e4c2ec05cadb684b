"""The built-in task types end to end (burst worker, offline model, real Postgres and Redis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import L2_DUE_AT, L2_LAST_UPDATE, L2_PENDING_COUNTS
from app.errors import ValidationError
from app.l2.models import ChatMessage, TopicMemory, TopicMemoryVersion
from tests.support.settings import make_test_settings
from tests.support.tasks import run_burst

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def record(client: MemoryClient, chat_id: str, count: int, group_id: str = "g1") -> None:
    await client.record_messages(
        [
            {
                "chat_id": chat_id,
                "group_id": group_id,
                "message_id": f"{chat_id}-m{i}",
                "content": f"{chat_id} message {i}: shall we ship the release on Friday?",
                "sent_at": START + timedelta(minutes=i),
                "user_id": f"u{i % 3}",
            }
            for i in range(count)
        ]
    )


async def count(
    factory: async_sessionmaker[AsyncSession],
    model: type[ChatMessage] | type[TopicMemory] | type[TopicMemoryVersion],
    chat_id: str,
) -> int:
    async with factory() as session:
        found = await session.scalar(select(func.count()).select_from(model).where(model.chat_id == chat_id))
    return int(found or 0)


async def test_rebuild_refolds_the_whole_history_and_swaps_it_in(
    settings: Settings, client: MemoryClient, redis: ArqRedis
) -> None:
    await record(client, "c1", 25)
    await client.request_topic_update("c1")
    await run_burst(settings)  # live L2 updates fold the history as usual
    before = await client.get_topic_memory("c1")
    assert before.pending_count == 0 and before.version >= 1

    await record(client, "c1", 28)  # three more, still pending when the rebuild swaps
    task = await client.create_task("rebuild_topic_memory", {"chat_id": "c1", "batch_size": 10})
    await run_burst(settings)

    done = await client.get_task(task.id)
    assert done.status == "finished", done.errors
    assert done.state_visits == {"fold": 3, "swap": 1, "publish": 1}  # 10 + 10 + 8, then the swap
    after = await client.get_topic_memory("c1", history=True)
    assert after.version == before.version + 1
    assert done.result == {
        "chat_id": "c1",
        "version": after.version,
        "messages_folded": 28,
        "topics": len(after.topics),
        "summarizer": "offline",
    }
    assert after.message_count == 28 and after.pending_count == 0
    assert after.history is not None and after.history[0].summarizer == "offline (rebuild)"
    assert len(after.history[0].message_ids) == 3  # it folded exactly the messages still pending
    assert after.topics and all(topic.message_count > 0 for topic in after.topics)
    assert sum(topic.message_count for topic in after.topics) <= 28
    assert await redis.hget(L2_PENDING_COUNTS, "c1") is None  # type: ignore[misc]


async def test_rebuild_of_an_unknown_chat_fails_at_once(settings: Settings, client: MemoryClient) -> None:
    task = await client.create_task("rebuild_topic_memory", {"chat_id": "nobody"})
    await run_burst(settings)
    failed = await client.get_task(task.id)
    assert failed.status == "failed" and len(failed.errors) == 1
    assert failed.errors[0]["message"] == "chat 'nobody' has no recorded messages and no topic memory"


async def test_export_writes_a_chats_memory_and_history_as_json_lines(
    client: MemoryClient, tmp_path: Path
) -> None:
    worker_settings = make_test_settings(long_task_export_dir=str(tmp_path))
    await record(client, "c1", 5)
    await client.request_topic_update("c1")
    await run_burst(worker_settings)

    task = await client.create_task(
        "export_memories", {"chat_id": "c1", "file_name": "c1.jsonl", "batch_size": 2}
    )
    await run_burst(worker_settings)

    done = await client.get_task(task.id)
    assert done.status == "finished", done.errors
    path = tmp_path / "c1.jsonl"
    assert done.result == {
        "path": str(path),
        "lines": 7,
        "bytes": path.stat().st_size,
        "messages": 5,
        "memories": 1,
    }
    assert list(tmp_path.iterdir()) == [path]  # the .partial file was renamed, nothing else left
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["export", "topic_memory"] + ["message"] * 5
    assert lines[0]["chat_id"] == "c1" and lines[0]["task_id"] == task.id
    memory = await client.get_topic_memory("c1")
    assert lines[1]["version"] == memory.version
    assert [topic["id"] for topic in lines[1]["topics"]] == [topic.id for topic in memory.topics]
    assert [line["external_id"] for line in lines[2:]] == [f"c1-m{i}" for i in range(5)]
    assert lines[2]["content"] == "c1 message 0: shall we ship the release on Friday?"


async def test_export_of_a_group_covers_every_chat(client: MemoryClient, tmp_path: Path) -> None:
    worker_settings = make_test_settings(long_task_export_dir=str(tmp_path))
    await record(client, "c1", 3, group_id="g7")
    await record(client, "c2", 2, group_id="g7")
    await record(client, "other", 2, group_id="g8")
    await client.request_topic_update("c1")
    await client.request_topic_update("c2")
    await run_burst(worker_settings)

    task = await client.create_task("export_memories", {"group_id": "g7"})
    await run_burst(worker_settings)

    done = await client.get_task(task.id)
    assert done.status == "finished", done.errors
    assert done.result is not None
    path = Path(done.result["path"])
    assert path == tmp_path / f"group-g7-task{task.id}.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["chat_id"] for line in lines if line["type"] == "topic_memory"] == ["c1", "c2"]
    assert sorted(line["external_id"] for line in lines if line["type"] == "message") == [
        "c1-m0",
        "c1-m1",
        "c1-m2",
        "c2-m0",
        "c2-m1",
    ]


async def test_export_input_is_checked_at_creation(client: MemoryClient) -> None:
    with pytest.raises(ValidationError, match="give exactly one of chat_id or group_id"):
        await client.create_task("export_memories", {"chat_id": "c1", "group_id": "g1"})
    with pytest.raises(ValidationError, match="file_name must be a plain name"):
        await client.create_task("export_memories", {"chat_id": "c1", "file_name": "../../etc/passwd.jsonl"})
    assert await client.list_tasks() == []


async def test_purge_removes_a_chat_everywhere_and_reports_what_went(
    settings: Settings,
    client: MemoryClient,
    redis: ArqRedis,
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    await record(client, "c1", 12)
    await record(client, "c2", 4)
    await client.request_topic_update("c1")
    await client.request_topic_update("c2")
    await run_burst(settings)
    versions = await count(session_factory, TopicMemoryVersion, "c1")
    assert versions >= 1 and await redis.hget(L2_LAST_UPDATE, "c1") is not None  # type: ignore[misc]

    task = await client.create_task("purge_chat", {"chat_id": "c1", "batch_size": 5})
    await run_burst(settings)

    done = await client.get_task(task.id)
    assert done.status == "finished", done.errors
    assert done.state_visits == {"messages": 3, "memory": 1, "redis": 1}
    assert done.result is not None and done.result["chat_id"] == "c1"
    removed = done.result["removed"]
    assert removed["chat_messages"] == 12
    assert removed["topic_memories"] == 1 and removed["topic_memory_versions"] == versions
    assert removed["redis_entries"] >= 1
    for model in (ChatMessage, TopicMemory, TopicMemoryVersion):
        assert await count(session_factory, model, "c1") == 0
    assert await count(session_factory, ChatMessage, "c2") == 4  # another chat is untouched
    assert await count(session_factory, TopicMemory, "c2") == 1
    for key in (L2_LAST_UPDATE, L2_PENDING_COUNTS):
        assert await redis.hget(key, "c1") is None  # type: ignore[misc]
    assert await redis.zscore(L2_DUE_AT, "c1") is None
    assert await redis.hget(L2_LAST_UPDATE, "c2") is not None  # type: ignore[misc]
