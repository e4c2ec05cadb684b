"""Shared fixtures: real Postgres and Redis, a dedicated test database and Redis db, wiped per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from alembic import command
from arq import create_pool
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings, get_settings
from app.db.engine import create_engine, create_session_factory
from app.db.models import Base
from app.db.schema_check import alembic_config
from app.redis_settings import build_redis_settings
from app.serialization import deserialize, serialize
from tests.support.settings import TEST_POSTGRES_DB, ensure_database, make_test_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings pointing at the test database and test Redis db, its schema built once per session.

    The schema comes from the models and is stamped at the migration head; `tests/migrations`
    proves the migrations build the same schema.
    """
    test_settings = make_test_settings()
    asyncio.run(ensure_database(test_settings, TEST_POSTGRES_DB, recreate=True))
    asyncio.run(_create_schema(test_settings))
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", test_settings.sqlalchemy_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.stamp(config, "head")
    return test_settings


async def _create_schema(settings: Settings) -> None:
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_session_factory(engine)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(
        build_redis_settings(settings),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.arq_queue_name,
    )
    yield pool
    await pool.aclose()


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty every table and the test Redis db before each test that uses the services."""
    if "settings" not in request.fixturenames:
        yield
        return
    settings: Settings = request.getfixturevalue("settings")
    engine = create_engine(settings)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()
    pool = await create_pool(build_redis_settings(settings))
    await pool.flushdb()
    await pool.aclose()
    yield


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[MemoryClient]:
    async with MemoryClient(settings) as memory_client:
        yield memory_client
