"""Migrations: upgrade builds the schema on an empty database, the models never drift, downgrade
removes everything, and upgrade works again after it."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.models import Base
from app.db.schema_check import alembic_config, head_revision
from tests.support.settings import TEST_POSTGRES_DB, ensure_database, make_test_settings

MIGRATIONS_DB = f"{TEST_POSTGRES_DB}_migrations"


@pytest.fixture
def config() -> Config:
    settings = make_test_settings(MIGRATIONS_DB)
    asyncio.run(ensure_database(settings, MIGRATIONS_DB, recreate=True))
    alembic = alembic_config()
    alembic.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    alembic.attributes["configure_logger"] = False
    return alembic


def _tables() -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(make_test_settings(MIGRATIONS_DB).sqlalchemy_url)
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        await engine.dispose()
        return names

    return asyncio.run(read())


def test_upgrade_check_downgrade_upgrade(config: Config) -> None:
    assert _tables() == set()
    command.upgrade(config, "head")
    assert _tables() == set(Base.metadata.tables) | {"alembic_version"}
    command.check(config)  # raises if the models and the migrations disagree
    command.downgrade(config, "base")
    assert _tables() == {"alembic_version"}
    command.upgrade(config, "head")
    assert _tables() == set(Base.metadata.tables) | {"alembic_version"}


def test_head_is_a_single_revision() -> None:
    assert head_revision()
