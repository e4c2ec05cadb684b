"""The connection half of `MemoryClient`: Redis (arq pool, msgpack) and Postgres, opened together."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from arq import create_pool
from arq.connections import ArqRedis
from arq.jobs import Job
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings, get_settings
from app.db.engine import create_engine, create_session_factory
from app.errors import AppError
from app.failures.models import JobFailure
from app.failures.repository import list_failures
from app.redis_settings import build_redis_settings
from app.serialization import deserialize, serialize


class ClientBase:
    """Use as `async with MemoryClient() as client:`; domain mixins add the methods services call."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._redis: ArqRedis | None = None
        self._engine: AsyncEngine | None = None
        self._session_factory: async_sessionmaker[AsyncSession] | None = None

    async def __aenter__(self) -> Self:
        self._redis = await create_pool(
            build_redis_settings(self.settings),
            job_serializer=serialize,
            job_deserializer=deserialize,
            default_queue_name=self.settings.arq_queue_name,
        )
        self._engine = create_engine(self.settings)
        self._session_factory = create_session_factory(self._engine)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def redis(self) -> ArqRedis:
        if self._redis is None:
            raise AppError("MemoryClient is not open: use `async with MemoryClient() as client`")
        return self._redis

    @property
    def session_factory(self) -> async_sessionmaker[AsyncSession]:
        if self._session_factory is None:
            raise AppError("MemoryClient is not open: use `async with MemoryClient() as client`")
        return self._session_factory

    async def enqueue(
        self, function: str, *args: Any, job_id: str | None = None, **kwargs: Any
    ) -> Job | None:
        """Enqueue a job with msgpack; None when a job with `job_id` is already queued."""
        return await self.redis.enqueue_job(function, *args, _job_id=job_id, **kwargs)

    async def list_failures(
        self,
        *,
        function: str | None = None,
        subject_kind: str | None = None,
        subject_id: str | None = None,
        limit: int = 100,
    ) -> list[JobFailure]:
        """Jobs that finally failed, newest first (arq itself forgets them after `keep_result`)."""
        async with self.session_factory() as session:
            return await list_failures(
                session, function=function, subject_kind=subject_kind, subject_id=subject_id, limit=limit
            )
