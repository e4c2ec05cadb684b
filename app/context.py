"""The typed arq context: what `on_startup` opens and every job may use."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypedDict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings

if TYPE_CHECKING:
    from app.llm.base import MemoryModel


class WorkerContext(TypedDict, total=False):
    # filled by arq for every job
    redis: ArqRedis
    job_id: str
    job_try: int
    enqueue_time: datetime
    score: int
    # filled by our on_startup
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    memory_model: MemoryModel
    worker_id: str  # host:pid:nonce, the lease owner for long tasks
    clock: Callable[[], datetime]  # aware UTC "now"; tests pass their own via `Worker(ctx={"clock": ...})`


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)
