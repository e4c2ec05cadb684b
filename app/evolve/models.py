"""Evolve tables: each group's consensus memory, its versions with item-level diffs, per-chat cursors
of what was distilled, and the ledgers that make the daily distillation run once per group per day.

Why per-chat cursors instead of one "highest topic version id" watermark: topic-memory version ids
come from a sequence, and concurrent L2 transactions can commit out of id order (id 101 visible while
id 100 is still uncommitted). A watermark would then skip version 100 forever. Each chat's own
version number is serialised by that chat's row lock, so "distilled up to version N of chat C" is
exact.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, created_at_column
from app.l2.models import ID_LENGTH

TRIGGERS = ("daily", "manual")


class GroupMemory(Base):
    """The current consensus of one group; its row lock serialises distillations of that group."""

    __tablename__ = "group_memories"

    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    next_item_number: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class GroupChatCursor(Base):
    """How far one chat's topic memory has been distilled into its group's consensus."""

    __tablename__ = "group_chat_cursors"

    group_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("group_memories.group_id", ondelete="CASCADE"), primary_key=True
    )
    chat_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    topic_version: Mapped[int] = mapped_column(Integer, nullable=False)  # the chat's version number
    topic_version_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # that version's row id
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class GroupMemoryVersion(Base):
    """One distillation: the items after it, what changed, and which topic versions it drew on."""

    __tablename__ = "group_memory_versions"
    __table_args__ = (UniqueConstraint("group_id", "version", name="uq_group_memory_versions_group_version"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    group_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("group_memories.group_id", ondelete="CASCADE"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    diff: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    rejected: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    topic_version_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    trigger: Mapped[str] = mapped_column(String(20), nullable=False)  # daily, manual
    day: Mapped[date | None] = mapped_column(Date)  # the distillation day of a daily run
    producer: Mapped[str] = mapped_column(String(100), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()


class GroupDistillationDay(Base):
    """At most one daily distillation per group per local day: the primary key enforces it.

    Written in the same transaction as the version it produced, so a run that crashed before its
    commit leaves no claim and is retried the same day.
    """

    __tablename__ = "group_distillation_days"

    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()


class EvolveDailyRun(Base):
    """The daily fan-out of one local day has enqueued its jobs: catch-up at start-up skips it."""

    __tablename__ = "evolve_daily_runs"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    groups_enqueued: Mapped[int] = mapped_column(Integer, nullable=False)
    source: Mapped[str] = mapped_column(String(20), nullable=False)  # cron, startup, baseline (first start)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
