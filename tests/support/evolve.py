"""Evolve test helpers: topic-memory versions written straight through the L2 models, a controlled
clock, test memory models (a recorder, a connection killer, scripted answers) and row counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from arq.cron import CronJob
from arq.worker import Worker
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.context import WorkerContext
from app.evolve.models import GroupChatCursor, GroupDistillationDay, GroupMemory, GroupMemoryVersion
from app.l2.models import TopicMemory, TopicMemoryVersion
from app.llm.base import ConsensusChange, ConsensusItem, ConsensusUpdate, Topic, TopicSource, Usage
from app.llm.models import LlmCall
from app.llm.offline import OfflineMemoryModel
from tests.support.workers import burst_worker

T0 = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)


def make_topic(topic_id: str, key_points: list[str], summary: str = "", title: str | None = None) -> Topic:
    return Topic(
        id=topic_id,
        title=title or f"topic {topic_id}",
        summary=summary,
        key_points=key_points,
        participants=["alice", "bob"],
        first_message_at=T0,
        last_message_at=T0,
        message_count=len(key_points) or 1,
    )


async def add_topic_version(
    session_factory: async_sessionmaker[AsyncSession], group_id: str, chat_id: str, topics: list[Topic]
) -> TopicMemoryVersion:
    """Write the chat's next topic-memory version and its current row, as an L2 update commits them."""
    payload = [topic.model_dump(mode="json") for topic in topics]
    async with session_factory.begin() as session:
        await session.execute(
            insert(TopicMemory).values(chat_id=chat_id, group_id=group_id).on_conflict_do_nothing()
        )
        memory = (
            await session.scalars(select(TopicMemory).where(TopicMemory.chat_id == chat_id).with_for_update())
        ).one()
        memory.version += 1
        memory.topics = payload
        memory.updated_at = datetime.now(UTC)
        values: dict[str, Any] = {
            "chat_id": chat_id,
            "group_id": group_id,
            "version": memory.version,
            "topics": payload,
            "message_ids": [],
            "message_count": 0,
            "summarizer": "test",
            "duration_ms": 0,
        }
        if "started_at" in TopicMemoryVersion.__table__.c:  # the L2 model is still evolving
            values["started_at"] = memory.updated_at
        row = TopicMemoryVersion(**values)
        session.add(row)
        await session.flush()
        return row


@dataclass
class Clock:
    """A controlled `ctx["clock"]`: returns `now` until the test moves it."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def worker_context(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: Any,
    clock: Callable[[], datetime],
) -> WorkerContext:
    """The context a worker's on_startup builds, for calling a cron or hook directly."""
    return {
        "settings": settings,
        "session_factory": session_factory,
        "redis": redis,
        "clock": clock,
        "memory_model": OfflineMemoryModel(),
        "job_id": "direct-call",
        "job_try": 1,
    }


@dataclass
class RecordingModel(OfflineMemoryModel):
    """The offline model, remembering what each call was shown."""

    calls: list[tuple[str, list[ConsensusItem], list[TopicSource]]] = field(default_factory=list)

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        self.calls.append((group_id, previous, sources))
        return await super().distil_consensus(group_id, previous, sources)


@dataclass
class ScriptedModel(OfflineMemoryModel):
    """Answers with fixed changes, whatever it is shown."""

    changes: list[ConsensusChange] = field(default_factory=list)
    name: str = "scripted"

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        return ConsensusUpdate(
            changes=self.changes, usage=[Usage(provider="scripted", model="scripted", prompt_tokens=10)]
        )


@dataclass
class ConnectionKillingModel(OfflineMemoryModel):
    """Answers like the offline model, but first terminates the database connection of the
    transaction that is waiting for it: the commit that follows cannot happen (once, unless `times`)."""

    database_url: str = ""
    times: int = 1
    killed: int = 0

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        answer = await super().distil_consensus(group_id, previous, sources)
        if self.killed < self.times:
            connection = await asyncpg.connect(self.database_url)
            try:
                pids = await connection.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND state = 'idle in transaction' "
                    "AND pid <> pg_backend_pid()"
                )
            finally:
                await connection.close()
            assert pids, "no transaction was waiting for the model"
            self.killed += 1
        return answer


@dataclass
class OverflowingUsageModel(OfflineMemoryModel):
    """Returns a valid answer whose usage cannot be stored (cost beyond NUMERIC(14,6)): the fault
    happens after the model answered, while the distillation is being written, before the commit."""

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        answer = await super().distil_consensus(group_id, previous, sources)
        answer.usage.append(Usage(provider="x", model="x", cost_usd=Decimal("1e12")))
        return answer


def asyncpg_url(settings: Settings) -> str:
    return settings.sqlalchemy_url.replace("postgresql+asyncpg", "postgresql", 1)


async def count_rows(session_factory: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Rows of every evolve table plus consensus usage rows: what a rolled-back run must not leave."""
    counted: dict[str, int] = {}
    async with session_factory() as session:
        for name, model in (
            ("memories", GroupMemory),
            ("versions", GroupMemoryVersion),
            ("cursors", GroupChatCursor),
            ("days", GroupDistillationDay),
        ):
            counted[name] = int(await session.scalar(select(func.count()).select_from(model)) or 0)
        usage = select(func.count()).where(LlmCall.purpose == "consensus")
        counted["usage"] = int(await session.scalar(usage) or 0)
    return counted


async def versions_of(
    session_factory: async_sessionmaker[AsyncSession], group_id: str
) -> list[GroupMemoryVersion]:
    async with session_factory() as session:
        query = (
            select(GroupMemoryVersion)
            .where(GroupMemoryVersion.group_id == group_id)
            .order_by(GroupMemoryVersion.version)
        )
        return list((await session.scalars(query)).all())


async def run_burst_worker(
    settings: Settings,
    *,
    clock: Callable[[], datetime] | None = None,
    model: Any = None,
    cron_jobs: list[CronJob] | None = None,
    after_startup: Callable[[dict[str, Any]], None] | None = None,
) -> Worker:
    """Start a burst worker (its start-up hooks run, catch-up included), drain the queue, close it.

    `clock` becomes `ctx["clock"]`; `model` replaces the configured memory model after start-up;
    `after_startup(ctx)` runs once start-up is done, before the first job.
    """
    overrides: dict[str, Any] = {}
    if clock is not None:
        overrides["ctx"] = {"clock": clock}
    if cron_jobs is not None:
        overrides["cron_jobs"] = cron_jobs
    worker = burst_worker(settings, **overrides)
    original = worker.on_startup
    assert original is not None

    async def startup(ctx: dict[str, Any]) -> None:
        await original(ctx)
        if model is not None:
            ctx["memory_model"] = model
        if after_startup is not None:
            after_startup(ctx)

    worker.on_startup = startup
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker
