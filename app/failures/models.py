"""The failures table: every job that finally failed, kept for operators (arq forgets failures)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, created_at_column


class JobFailure(Base):
    __tablename__ = "job_failures"
    __table_args__ = (Index("ix_job_failures_subject", "subject_kind", "subject_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[str | None] = mapped_column(String(200), index=True)
    function: Mapped[str] = mapped_column(String(100), nullable=False)
    job_try: Mapped[int | None] = mapped_column(Integer)
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    subject_kind: Mapped[str | None] = mapped_column(String(20))  # chat, group, task
    subject_id: Mapped[str | None] = mapped_column(String(200))
    error_type: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    failed_at: Mapped[datetime] = created_at_column()
