"""Every query of the evolve domain: group memory rows, cursors, versions and the daily ledgers.

"Changed" means a chat whose current topic-memory version (`topic_memories.version`, one row per
chat, serialised by L2's row lock) is above the version its group's cursor records. Only the
latest version of each changed chat is read: a chat's topic memory is its whole current state, so
it supersedes the versions in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.evolve.models import (
    EvolveDailyRun,
    GroupChatCursor,
    GroupDistillationDay,
    GroupMemory,
    GroupMemoryVersion,
)
from app.l2.models import TopicMemory, TopicMemoryVersion


@dataclass(frozen=True)
class ChangedChat:
    chat_id: str
    version: int  # the chat's current topic-memory version number


def _changed_condition() -> Any:
    """`topic_memories` rows above their group's cursor (or with no cursor yet)."""
    return TopicMemory.version > func.coalesce(GroupChatCursor.topic_version, 0)


def _cursor_join() -> Any:
    return and_(
        GroupChatCursor.group_id == TopicMemory.group_id, GroupChatCursor.chat_id == TopicMemory.chat_id
    )


async def lock_group_memory(session: AsyncSession, group_id: str) -> GroupMemory:
    """Create the group's row if missing and lock it until the transaction ends."""
    await session.execute(insert(GroupMemory).values(group_id=group_id).on_conflict_do_nothing())
    query = select(GroupMemory).where(GroupMemory.group_id == group_id).with_for_update()
    return (await session.scalars(query.execution_options(populate_existing=True))).one()


async def has_topic_memory(session: AsyncSession, group_id: str) -> bool:
    query = select(exists().where(TopicMemory.group_id == group_id, TopicMemory.version > 0))
    return bool(await session.scalar(query))


async def changed_chats(session: AsyncSession, group_id: str, limit: int) -> tuple[list[ChangedChat], int]:
    """Up to `limit` changed chats, longest-waiting first, and how many changed chats there are."""
    base = (
        select(TopicMemory.chat_id, TopicMemory.version, TopicMemory.updated_at)
        .outerjoin(GroupChatCursor, _cursor_join())
        .where(TopicMemory.group_id == group_id, _changed_condition())
    )
    total = await session.scalar(select(func.count()).select_from(base.subquery()))
    rows = await session.execute(
        base.order_by(TopicMemory.updated_at.asc().nulls_first(), TopicMemory.chat_id).limit(limit)
    )
    return [ChangedChat(row.chat_id, row.version) for row in rows], int(total or 0)


async def topic_versions(session: AsyncSession, chats: list[ChangedChat]) -> list[TopicMemoryVersion]:
    """The version rows of `chats` at their listed versions, oldest row first."""
    if not chats:
        return []
    keys = [(chat.chat_id, chat.version) for chat in chats]
    query = (
        select(TopicMemoryVersion)
        .where(tuple_(TopicMemoryVersion.chat_id, TopicMemoryVersion.version).in_(keys))
        .order_by(TopicMemoryVersion.id)
    )
    return list((await session.scalars(query)).all())


async def advance_cursors(
    session: AsyncSession, group_id: str, versions: list[TopicMemoryVersion], now: datetime
) -> None:
    """Record each chat's distilled version, in one statement."""
    if not versions:
        return
    statement = insert(GroupChatCursor).values(
        [
            {
                "group_id": group_id,
                "chat_id": row.chat_id,
                "topic_version": row.version,
                "topic_version_id": row.id,
                "updated_at": now,
            }
            for row in versions
        ]
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[GroupChatCursor.group_id, GroupChatCursor.chat_id],
            set_={
                "topic_version": statement.excluded.topic_version,
                "topic_version_id": statement.excluded.topic_version_id,
                "updated_at": statement.excluded.updated_at,
            },
        )
    )


async def day_claimed(session: AsyncSession, group_id: str, day: date) -> bool:
    query = select(exists().where(GroupDistillationDay.group_id == group_id, GroupDistillationDay.day == day))
    return bool(await session.scalar(query))


async def claim_day(
    session: AsyncSession, group_id: str, day: date, version: int, job_id: str | None
) -> None:
    """Insert the ledger row; a concurrent claim violates the primary key and aborts the transaction."""
    session.add(GroupDistillationDay(group_id=group_id, day=day, version=version, job_id=job_id))
    await session.flush()


async def add_version(session: AsyncSession, version: GroupMemoryVersion) -> None:
    session.add(version)
    await session.flush()


async def changed_groups(session: AsyncSession, day: date) -> list[str]:
    """Groups with a changed chat and no daily distillation on `day` yet, in id order."""
    claimed = exists().where(
        GroupDistillationDay.group_id == TopicMemory.group_id, GroupDistillationDay.day == day
    )
    query = (
        select(TopicMemory.group_id)
        .outerjoin(GroupChatCursor, _cursor_join())
        .where(_changed_condition(), ~claimed)
        .group_by(TopicMemory.group_id)
        .order_by(TopicMemory.group_id)
    )
    return list((await session.scalars(query)).all())


async def prune_distillation_days(session: AsyncSession, before: date) -> int:
    """Delete per-group ledger rows of days before `before`; returns how many. Only a daily job of
    its own day reads a row, and arq forgets such a job within a day, so old rows guard nothing."""
    result = await session.execute(delete(GroupDistillationDay).where(GroupDistillationDay.day < before))
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE has rowcount


async def any_daily_run(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().select_from(EvolveDailyRun))))


async def daily_run_done(session: AsyncSession, day: date) -> bool:
    return bool(await session.scalar(select(exists().where(EvolveDailyRun.day == day))))


async def mark_daily_run(session: AsyncSession, day: date, groups: int, source: str, now: datetime) -> bool:
    """Record that `day`'s fan-out finished; False when another worker recorded it first."""
    statement = (
        insert(EvolveDailyRun)
        .values(day=day, groups_enqueued=groups, source=source, finished_at=now)
        .on_conflict_do_nothing()
        .returning(EvolveDailyRun.day)
    )
    return (await session.execute(statement)).first() is not None


async def get_group_memory(session: AsyncSession, group_id: str) -> GroupMemory | None:
    return await session.get(GroupMemory, group_id)


async def list_versions(session: AsyncSession, group_id: str, limit: int) -> list[GroupMemoryVersion]:
    """The newest `limit` versions of the group, newest first."""
    query = (
        select(GroupMemoryVersion)
        .where(GroupMemoryVersion.group_id == group_id)
        .order_by(GroupMemoryVersion.version.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def count_versions(session: AsyncSession, group_id: str) -> int:
    query = select(func.count()).where(GroupMemoryVersion.group_id == group_id)
    return int(await session.scalar(query) or 0)
