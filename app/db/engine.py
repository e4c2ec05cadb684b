"""Async engine and session factory built from the settings."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    """One pooled engine per process.

    After a database restart the first statement on each stale connection fails; SQLAlchemy then
    invalidates the whole pool, and our callers retry (jobs via the guard, recording once itself).
    """
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=settings.db_pool_pre_ping,
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def engine_of(session_factory: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    """The engine a session factory is bound to (for the few paths that skip the ORM session)."""
    engine = session_factory.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    return engine
