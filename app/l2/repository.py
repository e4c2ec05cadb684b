"""Every SQL statement of L2 (SQLAlchemy Core and `text`): the only module that builds L2 queries.

Hot paths avoid ORM objects: recording inserts a whole batch with one `INSERT ... SELECT unnest(...)`
(one statement, one round trip, whatever the batch size).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, any_, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.l2.models import ChatMessage, TopicMemory, TopicMemoryVersion
from app.l2.schemas import NewMessage

_INSERT_MESSAGES_SQL = """
    INSERT INTO chat_messages
        (chat_id, group_id, external_id, user_id, user_name, role, content, sent_at)
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[]
    )
    ON CONFLICT (chat_id, external_id) DO NOTHING
    RETURNING chat_id
"""


_LOCK_OR_CREATE = text(
    """
    WITH lock_wait AS MATERIALIZED (SELECT set_config('lock_timeout', :lock_timeout, true)),
    first_message AS (
        SELECT chat_id, group_id FROM chat_messages WHERE chat_id = :chat_id ORDER BY id LIMIT 1
    )
    INSERT INTO topic_memories (chat_id, group_id)
    SELECT first_message.chat_id, first_message.group_id FROM first_message, lock_wait
    ON CONFLICT (chat_id) DO UPDATE SET version = topic_memories.version
    RETURNING chat_id, group_id, version, topics, next_topic_number, message_count, updated_at
    """
)
_CREATE_MEMORIES = text(
    """
    INSERT INTO topic_memories (chat_id, group_id)
    SELECT c.chat_id, first_message.group_id
    FROM unnest(CAST(:chat_ids AS text[])) AS c(chat_id)
    CROSS JOIN LATERAL (
        SELECT group_id FROM chat_messages WHERE chat_id = c.chat_id ORDER BY id LIMIT 1
    ) AS first_message
    WHERE NOT EXISTS (SELECT 1 FROM topic_memories t WHERE t.chat_id = c.chat_id)
    ORDER BY c.chat_id
    ON CONFLICT (chat_id) DO NOTHING
    """
)
_LOCK_MEMORIES_SKIP_LOCKED = text(
    """
    SELECT chat_id, group_id, version, topics, next_topic_number, message_count, updated_at
    FROM topic_memories WHERE chat_id = ANY(CAST(:chat_ids AS text[]))
    ORDER BY chat_id
    FOR UPDATE SKIP LOCKED
    """
)
_PENDING_OF_CHATS = text(
    """
    SELECT c.chat_id, m.id, m.user_id, m.user_name, m.role, m.content, m.sent_at, pending.total
    FROM unnest(CAST(:chat_ids AS text[])) AS c(chat_id)
    CROSS JOIN LATERAL (
        SELECT count(*) AS total FROM chat_messages
        WHERE chat_id = c.chat_id AND topic_version_id IS NULL
    ) AS pending
    CROSS JOIN LATERAL (
        SELECT id, user_id, user_name, role, content, sent_at FROM chat_messages
        WHERE chat_id = c.chat_id AND topic_version_id IS NULL
        ORDER BY id
        LIMIT :limit
    ) AS m
    ORDER BY c.chat_id, m.id
    """
)
# One statement for a whole batch: a version per chat, its messages marked folded by it (only those
# still pending), the chat's memory row updated; returns per chat (messages marked, memory rows).
# The leading comment names it in pg_stat_activity, which shows only the first 1 kB of a query.
WRITE_VERSIONS_TAG = "/* l2 write_versions */"
_WRITE_VERSIONS = text(
    WRITE_VERSIONS_TAG
    + """
    WITH input AS MATERIALIZED (
        SELECT * FROM unnest(
            CAST(:chat_ids AS text[]), CAST(:group_ids AS text[]), CAST(:versions AS integer[]),
            CAST(:topics AS text[]), CAST(:message_counts AS integer[]), CAST(:summarizers AS text[]),
            CAST(:durations_ms AS integer[]), CAST(:next_topic_numbers AS integer[]),
            CAST(:total_counts AS bigint[])
        ) AS i(chat_id, group_id, version, topics, message_count, summarizer, duration_ms,
               next_topic_number, total_count)
    ), folding AS MATERIALIZED (
        SELECT * FROM unnest(CAST(:message_ids AS bigint[]), CAST(:message_chats AS text[]))
            AS f(message_id, chat_id)
    ), version AS (
        INSERT INTO topic_memory_versions (chat_id, group_id, version, topics, message_ids, message_count,
                                           summarizer, duration_ms, started_at, job_id, job_try)
        SELECT i.chat_id, i.group_id, i.version, CAST(i.topics AS jsonb),
               ARRAY(SELECT f.message_id FROM folding f WHERE f.chat_id = i.chat_id ORDER BY f.message_id),
               i.message_count, i.summarizer, i.duration_ms, :started_at, :job_id, :job_try
        FROM input i
        RETURNING id, chat_id
    ), folded AS (
        UPDATE chat_messages SET topic_version_id = version.id
        FROM folding JOIN version ON version.chat_id = folding.chat_id
        WHERE chat_messages.id = folding.message_id AND chat_messages.topic_version_id IS NULL
        RETURNING chat_messages.chat_id
    ), memory AS (
        UPDATE topic_memories
        SET version = i.version, topics = CAST(i.topics AS jsonb), next_topic_number = i.next_topic_number,
            message_count = i.total_count, updated_at = :updated_at
        FROM input i
        WHERE topic_memories.chat_id = i.chat_id
        RETURNING topic_memories.chat_id
    )
    SELECT i.chat_id,
           (SELECT count(*) FROM folded WHERE folded.chat_id = i.chat_id),
           (SELECT count(*) FROM memory WHERE memory.chat_id = i.chat_id)
    FROM input i
    """
).bindparams(
    bindparam("started_at", type_=DateTime(timezone=True)),
    bindparam("updated_at", type_=DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class MemoryRow:
    chat_id: str
    group_id: str
    version: int
    topics: list[dict[str, Any]]
    next_topic_number: int
    message_count: int
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class PendingMessage:
    id: int
    user_id: str | None
    user_name: str | None
    role: str
    content: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class PendingChat:
    """A chat with pending messages, for the reconcile step."""

    chat_id: str
    pending: int
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class VersionWrite:
    """One chat's new topic-memory version, as `write_versions` writes it."""

    chat_id: str
    group_id: str
    version: int
    topics: list[dict[str, Any]]
    message_ids: list[int]
    summarizer: str
    duration_ms: int
    next_topic_number: int
    total_count: int  # messages folded into the chat's memory, these included


async def insert_messages(
    connection: AsyncConnection, messages: Sequence[NewMessage], *, checked: bool = False
) -> list[str]:
    """Insert the batch, skipping (chat_id, external_id) pairs already stored; returns the chat id of
    every row actually inserted (one entry per new message). Run it outside a transaction: the one
    statement commits by itself.

    This is the service side's hottest statement (a chat API records every message), so by default
    it goes straight to the asyncpg connection: no statement compilation or result wrapping, and
    asyncpg keeps it prepared. `checked=True` sends it through SQLAlchemy instead, which recognises
    a dead connection and recycles the whole pool (the caller's retry path after a restart)."""
    params = (
        [m.chat_id for m in messages],
        [m.group_id or m.chat_id for m in messages],
        [m.message_id for m in messages],
        [m.user_id for m in messages],
        [m.user_name for m in messages],
        [m.role for m in messages],
        [m.content for m in messages],
        [m.sent_at for m in messages],
    )
    if checked:
        result = await connection.exec_driver_sql(_INSERT_MESSAGES_SQL, params)
        return list(result.scalars())
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    return [row[0] for row in await driver.fetch(_INSERT_MESSAGES_SQL, *params)]


async def set_lock_timeout(session: AsyncSession, seconds: float) -> None:
    """Bound every lock wait of the current transaction (Postgres raises lock_not_available)."""
    await session.execute(select(func.set_config("lock_timeout", f"{int(seconds * 1000)}ms", True)))


def _memory_columns() -> tuple[Any, ...]:
    t = TopicMemory
    return (t.chat_id, t.group_id, t.version, t.topics, t.next_topic_number, t.message_count, t.updated_at)


async def lock_memory(session: AsyncSession, chat_id: str) -> MemoryRow | None:
    """The chat's memory row, locked FOR UPDATE until the transaction ends: one writer per chat.

    The lock lives in Postgres, so it dies with the connection when a worker is killed, and no
    update can outlive it the way an update could outlive an expiring Redis lock."""
    row = (
        await session.execute(
            select(*_memory_columns()).where(TopicMemory.chat_id == chat_id).with_for_update()
        )
    ).first()
    return None if row is None else MemoryRow(*row)


async def lock_or_create_memory(
    session: AsyncSession, chat_id: str, lock_wait_seconds: float
) -> MemoryRow | None:
    """Lock the chat's memory row, creating it first for a chat that has messages: one statement.

    The upsert waits for a row locked by another update (ON CONFLICT DO UPDATE locks the row it
    conflicts with), bounded by `lock_timeout`, set by the same statement before any row is
    produced. Returns the latest committed row, or None when the chat has no message at all."""
    params = {"chat_id": chat_id, "lock_timeout": f"{int(lock_wait_seconds * 1000)}ms"}
    row = (await session.execute(_LOCK_OR_CREATE, params)).first()
    return None if row is None else MemoryRow(*row)


async def lock_more_memories(session: AsyncSession, chat_ids: Sequence[str]) -> list[MemoryRow]:
    """Lock the memory rows of more chats in this transaction, creating the missing rows of chats
    that have messages; a row another transaction holds is skipped (SKIP LOCKED), never waited for.
    Returns the rows locked, in chat id order (a chat with no message and no row is absent)."""
    if not chat_ids:
        return []
    params = {"chat_ids": list(chat_ids)}
    await session.execute(_CREATE_MEMORIES, params)
    rows = (await session.execute(_LOCK_MEMORIES_SKIP_LOCKED, params)).all()
    return [MemoryRow(*row) for row in rows]


async def read_memory(session: AsyncSession, chat_id: str) -> MemoryRow | None:
    row = (await session.execute(select(*_memory_columns()).where(TopicMemory.chat_id == chat_id))).first()
    return None if row is None else MemoryRow(*row)


async def chat_group(session: AsyncSession, chat_id: str) -> str | None:
    """The group of the chat's first recorded message; None when the chat has no message at all."""
    query = (
        select(ChatMessage.group_id).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.id).limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def create_memory(session: AsyncSession, chat_id: str, group_id: str) -> None:
    """Create the empty memory row of a chat unless it exists."""
    statement = pg_insert(TopicMemory).values(chat_id=chat_id, group_id=group_id).on_conflict_do_nothing()
    await session.execute(statement)


async def count_pending(session: AsyncSession, chat_id: str) -> int:
    query = select(func.count()).where(ChatMessage.chat_id == chat_id, ChatMessage.topic_version_id.is_(None))
    return int((await session.execute(query)).scalar_one())


async def pending_of_chats(
    session: AsyncSession, chat_ids: Sequence[str], limit: int
) -> dict[str, tuple[list[PendingMessage], int]]:
    """Per chat: its oldest pending messages (at most `limit`) and how many are pending in all; one
    statement for all chats. A chat with nothing pending is absent."""
    rows = (await session.execute(_PENDING_OF_CHATS, {"chat_ids": list(chat_ids), "limit": limit})).all()
    pending: dict[str, tuple[list[PendingMessage], int]] = {}
    for row in rows:
        messages, _ = pending.setdefault(row[0], ([], int(row[7])))
        messages.append(PendingMessage(*row[1:7]))
    return pending


async def write_versions(
    session: AsyncSession,
    writes: Sequence[VersionWrite],
    *,
    started_at: datetime,
    updated_at: datetime,
    job_id: str | None,
    job_try: int | None,
) -> dict[str, tuple[int, int]]:
    """In one statement, per chat: insert its version, mark its messages (those still pending) folded
    by it and update its memory row. Returns chat -> (messages marked, memory rows updated)."""
    params = {
        "chat_ids": [w.chat_id for w in writes],
        "group_ids": [w.group_id for w in writes],
        "versions": [w.version for w in writes],
        "topics": [json.dumps(w.topics, ensure_ascii=False) for w in writes],
        "message_counts": [len(w.message_ids) for w in writes],
        "summarizers": [w.summarizer for w in writes],
        "durations_ms": [w.duration_ms for w in writes],
        "next_topic_numbers": [w.next_topic_number for w in writes],
        "total_counts": [w.total_count for w in writes],
        "message_ids": [i for w in writes for i in w.message_ids],
        "message_chats": [w.chat_id for w in writes for _ in w.message_ids],
        "started_at": started_at,
        "updated_at": updated_at,
        "job_id": job_id,
        "job_try": job_try,
    }
    rows = (await session.execute(_WRITE_VERSIONS, params)).all()
    return {str(row[0]): (int(row[1]), int(row[2])) for row in rows}


async def insert_version(session: AsyncSession, values: dict[str, Any]) -> int:
    """Write one topic-memory version; returns its id (the update job writes with `write_versions`)."""
    statement = insert(TopicMemoryVersion).values(**values).returning(TopicMemoryVersion.id)
    return int((await session.execute(statement)).scalar_one())


async def mark_folded(session: AsyncSession, message_ids: list[int], version_id: int) -> int:
    """Mark still-pending messages as folded by `version_id`; returns how many rows changed."""
    statement = (
        update(ChatMessage)
        .where(
            ChatMessage.id == any_(bindparam("ids", message_ids, type_=ARRAY(BigInteger()))),
            ChatMessage.topic_version_id.is_(None),
        )
        .values(topic_version_id=version_id)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(statement)
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE has rowcount


async def save_memory(session: AsyncSession, chat_id: str, values: dict[str, Any]) -> None:
    await session.execute(update(TopicMemory).where(TopicMemory.chat_id == chat_id).values(**values))


async def list_versions(session: AsyncSession, chat_id: str, limit: int) -> list[TopicMemoryVersion]:
    query = (
        select(TopicMemoryVersion)
        .where(TopicMemoryVersion.chat_id == chat_id)
        .order_by(TopicMemoryVersion.version.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def pending_chats(session: AsyncSession, after: str | None, limit: int) -> list[PendingChat]:
    """One chunk of chats with pending messages, in chat id order after `after`.

    Walks the partial index of pending messages (GROUP BY chat_id), so its cost grows with what is
    pending, not with what was ever recorded."""
    m = ChatMessage
    pending = (
        select(m.chat_id, func.count().label("pending"))
        .where(m.topic_version_id.is_(None))
        .group_by(m.chat_id)
        .order_by(m.chat_id)
        .limit(limit)
    )
    if after is not None:
        pending = pending.where(m.chat_id > after)
    chunk = pending.subquery()
    query = (
        select(chunk.c.chat_id, chunk.c.pending, TopicMemory.updated_at)
        .select_from(chunk.outerjoin(TopicMemory, TopicMemory.chat_id == chunk.c.chat_id))
        .order_by(chunk.c.chat_id)
    )
    return [PendingChat(*row) for row in (await session.execute(query)).all()]


async def updated_chats(session: AsyncSession, after: str | None, limit: int) -> list[tuple[str, datetime]]:
    """One chunk of (chat_id, last update) for every chat updated at least once."""
    query = (
        select(TopicMemory.chat_id, TopicMemory.updated_at)
        .where(TopicMemory.updated_at.is_not(None))
        .order_by(TopicMemory.chat_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(TopicMemory.chat_id > after)
    rows = (await session.execute(query)).all()
    return [(str(chat_id), updated_at) for chat_id, updated_at in rows if updated_at is not None]
