"""Every query the built-in task types make on L2 and evolve data (and the Redis L2 keys they purge).

Reads walk `chat_messages` by (chat_id, id) or (group_id, id) in keyset order, so every step costs
the same however far into a long history it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.constants import (
    L2_DUE_AT,
    L2_LAST_UPDATE,
    L2_PENDING_COUNTS,
    L2_PENDING_SEQ,
    L2_QUEUED_CHATS,
    L2_QUEUED_PREFIX,
)
from app.evolve.models import GroupChatCursor, GroupMemory
from app.l2.models import ChatMessage, TopicMemory, TopicMemoryVersion

MESSAGE_COLUMNS = (
    ChatMessage.id,
    ChatMessage.chat_id,
    ChatMessage.group_id,
    ChatMessage.external_id,
    ChatMessage.user_id,
    ChatMessage.user_name,
    ChatMessage.role,
    ChatMessage.content,
    ChatMessage.sent_at,
    ChatMessage.topic_version_id,
)


async def chat_group(session: AsyncSession, chat_id: str) -> str | None:
    """The group of the chat (from its memory row, else its first message); None for an unknown chat."""
    group = await session.scalar(select(TopicMemory.group_id).where(TopicMemory.chat_id == chat_id))
    if group is not None:
        return str(group)
    first = await session.scalar(
        select(ChatMessage.group_id).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.id).limit(1)
    )
    return None if first is None else str(first)


async def messages_after(
    session: AsyncSession, *, chat_id: str | None = None, group_id: str | None = None, after: int, limit: int
) -> list[dict[str, Any]]:
    """Messages of a chat (or of every chat of a group) with id > `after`, oldest first."""
    query = select(*MESSAGE_COLUMNS).where(ChatMessage.id > after).order_by(ChatMessage.id).limit(limit)
    if chat_id is not None:
        query = query.where(ChatMessage.chat_id == chat_id)
    if group_id is not None:
        query = query.where(ChatMessage.group_id == group_id)
    return [dict(row._mapping) for row in (await session.execute(query)).all()]


async def count_messages_after(session: AsyncSession, chat_id: str, after: int) -> int:
    query = select(func.count()).where(ChatMessage.chat_id == chat_id, ChatMessage.id > after)
    return int(await session.scalar(query) or 0)


async def pending_ids_up_to(session: AsyncSession, chat_id: str, last_id: int) -> list[int]:
    """Ids of the chat's still-pending (never folded) messages with id <= `last_id`."""
    query = select(ChatMessage.id).where(
        ChatMessage.chat_id == chat_id, ChatMessage.id <= last_id, ChatMessage.topic_version_id.is_(None)
    )
    return [int(value) for value in (await session.scalars(query)).all()]


async def count_pending(session: AsyncSession, chat_id: str) -> int:
    query = select(func.count()).where(ChatMessage.chat_id == chat_id, ChatMessage.topic_version_id.is_(None))
    return int(await session.scalar(query) or 0)


async def topic_memories(
    session: AsyncSession, *, chat_id: str | None = None, group_id: str | None = None
) -> list[dict[str, Any]]:
    """Current topic memories of one chat or of every chat of a group, by chat id."""
    query = select(TopicMemory).order_by(TopicMemory.chat_id)
    if chat_id is not None:
        query = query.where(TopicMemory.chat_id == chat_id)
    if group_id is not None:
        query = query.where(TopicMemory.group_id == group_id)
    rows = (await session.scalars(query)).all()
    return [
        {
            "chat_id": row.chat_id,
            "group_id": row.group_id,
            "version": row.version,
            "topics": row.topics,
            "message_count": row.message_count,
            "updated_at": _iso(row.updated_at),
        }
        for row in rows
    ]


async def group_memory(session: AsyncSession, group_id: str) -> dict[str, Any] | None:
    row = await session.get(GroupMemory, group_id)
    if row is None:
        return None
    return {
        "group_id": row.group_id,
        "version": row.version,
        "items": row.items,
        "updated_at": _iso(row.updated_at),
    }


async def delete_messages(session: AsyncSession, chat_id: str, limit: int) -> int:
    """Delete up to `limit` of the chat's messages (oldest first); returns how many."""
    ids = select(ChatMessage.id).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.id).limit(limit)
    result = await session.execute(delete(ChatMessage).where(ChatMessage.id.in_(ids.scalar_subquery())))
    return int(result.rowcount)  # type: ignore[attr-defined]  # a DELETE's CursorResult has rowcount


async def delete_chat_memory(session: AsyncSession, chat_id: str) -> dict[str, int]:
    """Delete the chat's topic memory, all its versions and its distillation cursors; counts per table."""
    counts: dict[str, int] = {}
    for name, statement in (
        ("topic_memory_versions", delete(TopicMemoryVersion).where(TopicMemoryVersion.chat_id == chat_id)),
        ("topic_memories", delete(TopicMemory).where(TopicMemory.chat_id == chat_id)),
        ("group_chat_cursors", delete(GroupChatCursor).where(GroupChatCursor.chat_id == chat_id)),
    ):
        result = await session.execute(statement)
        counts[name] = int(result.rowcount)  # type: ignore[attr-defined]
    return counts


async def forget_chat_in_redis(redis: Redis, chat_id: str) -> int:
    """Remove the chat from every L2 scheduling key; returns how many fields/keys existed."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(L2_PENDING_COUNTS, chat_id)
        pipe.hdel(L2_PENDING_SEQ, chat_id)
        pipe.zrem(L2_DUE_AT, chat_id)
        pipe.hdel(L2_LAST_UPDATE, chat_id)
        pipe.delete(L2_QUEUED_PREFIX + chat_id)
        pipe.zrem(L2_QUEUED_CHATS, chat_id)
        removed: Sequence[int] = await pipe.execute()
    return sum(int(value) for value in removed)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
