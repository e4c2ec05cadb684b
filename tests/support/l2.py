"""L2 test helpers: messages, draining, reading what was folded, and holding Postgres locks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.worker import Worker
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.l2.models import ChatMessage, TopicMemoryVersion
from app.l2.schemas import NewMessage
from tests.support.workers import burst_worker

BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def msg(chat_id: str, n: int, content: str | None = None, **fields: Any) -> NewMessage:
    """Message number `n` of a chat (id `m<n>`), one second after the previous one."""
    return NewMessage(
        chat_id=chat_id,
        message_id=f"m{n}",
        content=content if content is not None else f"message {n} about the release plan of {chat_id}",
        sent_at=BASE_TIME + timedelta(seconds=n),
        user_id=fields.pop("user_id", f"user-{n % 3}"),
        **fields,
    )


async def drain(settings: Settings, **overrides: Any) -> Worker:
    """Run a burst worker until the queue is empty; returns it (for its counters)."""
    worker = burst_worker(settings, **overrides)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


async def recorded_ids(session_factory: async_sessionmaker[AsyncSession], chat_id: str) -> list[int]:
    """Every message id of the chat, in recording order."""
    async with session_factory() as session:
        query = select(ChatMessage.id).where(ChatMessage.chat_id == chat_id).order_by(ChatMessage.id)
        return list((await session.scalars(query)).all())


async def pending_ids(session_factory: async_sessionmaker[AsyncSession], chat_id: str) -> list[int]:
    async with session_factory() as session:
        query = (
            select(ChatMessage.id)
            .where(ChatMessage.chat_id == chat_id, ChatMessage.topic_version_id.is_(None))
            .order_by(ChatMessage.id)
        )
        return list((await session.scalars(query)).all())


async def versions(
    session_factory: async_sessionmaker[AsyncSession], chat_id: str
) -> list[TopicMemoryVersion]:
    async with session_factory() as session:
        query = (
            select(TopicMemoryVersion)
            .where(TopicMemoryVersion.chat_id == chat_id)
            .order_by(TopicMemoryVersion.version)
        )
        return list((await session.scalars(query)).all())


async def folded_in_order(session_factory: async_sessionmaker[AsyncSession], chat_id: str) -> list[int]:
    """The message ids of all versions of the chat, concatenated in version order."""
    return [i for version in await versions(session_factory, chat_id) for i in version.message_ids]


async def assert_exactly_once(session_factory: async_sessionmaker[AsyncSession], chat_id: str) -> None:
    """Every recorded message of the chat was folded once, in recording order, by consecutive versions,
    and each message points at the version that lists it."""
    chat_versions = await versions(session_factory, chat_id)
    assert [v.version for v in chat_versions] == list(range(1, len(chat_versions) + 1))
    folded = [i for v in chat_versions for i in v.message_ids]
    assert folded == await recorded_ids(session_factory, chat_id)
    async with session_factory() as session:
        rows = (
            await session.execute(
                select(ChatMessage.id, ChatMessage.topic_version_id).where(ChatMessage.chat_id == chat_id)
            )
        ).all()
    owner = {i: v.id for v in chat_versions for i in v.message_ids}
    assert {row.id: row.topic_version_id for row in rows} == owner


@asynccontextmanager
async def holding_lock(engine: AsyncEngine, sql: str, **params: Any) -> AsyncIterator[AsyncConnection]:
    """Run a locking statement (`... FOR UPDATE`) in an open transaction until the block ends."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(text(sql), params)
        try:
            yield connection
        finally:
            await transaction.rollback()


async def wait_for_blocked_backend(engine: AsyncEngine, query_like: str, timeout: float = 30.0) -> int:
    """Wait until a backend of this database waits on a lock while running a query LIKE `query_like`;
    returns its pid (an update paused at a known point)."""
    sql = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND query LIKE :pattern AND pid <> pg_backend_pid() LIMIT 1"
    )
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as connection:
            pid = (await connection.execute(sql, {"pattern": query_like})).scalar_one_or_none()
        if pid is not None:
            return int(pid)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no backend blocked on a query like {query_like!r}")
        await asyncio.sleep(0.02)
