"""Evolve tables: each group's consensus memory, its versions with item-level diffs, and the
one-per-day ledger that makes the daily distillation run once per group even with many workers."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, created_at_column
from app.l2.models import ID_LENGTH


class GroupMemory(Base):
    """The current consensus of one group; its row lock serialises distillations of that group."""

    __tablename__ = "group_memories"

    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    next_item_number: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
    last_topic_version_id: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


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
    topic_version_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    producer: Mapped[str] = mapped_column(String(100), nullable=False)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    job_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()


class GroupDistillationDay(Base):
    """At most one daily distillation per group per local day: the primary key enforces it."""

    __tablename__ = "group_distillation_days"

    group_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    created_at: Mapped[datetime] = created_at_column()
