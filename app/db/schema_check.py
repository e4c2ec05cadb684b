"""Refuse to run on a database that is not migrated to the head revision."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import NotMigratedError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config() -> Config:
    """The project's Alembic configuration (its URL still comes from the settings)."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise NotMigratedError("no migration scripts found")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None when it was never migrated."""
    async with engine.connect() as connection:
        try:
            row = (await connection.execute(text("SELECT version_num FROM alembic_version"))).first()
        except ProgrammingError:  # no alembic_version table: an empty database
            return None
    return None if row is None else str(row[0])


async def assert_migrated(engine: AsyncEngine) -> None:
    """Raise `NotMigratedError` naming both revisions unless the database is at head."""
    head = head_revision()
    current = await current_revision(engine)
    if current != head:
        raise NotMigratedError(
            f"database is at revision {current or 'none (empty)'}, code expects {head}: "
            "run `alembic upgrade head` (or `make migrate`) first"
        )
