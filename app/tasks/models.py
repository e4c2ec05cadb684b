"""The long-task table: durable state-machine tasks claimed with leases.

`status` is coarse: queued (never run), running (started; claimable between steps, leased while a
worker runs it), waiting (for its children), finished, failed, canceled. `state` is the task type's
own state name. The partial index serves the claim query: unfinished tasks by priority and age.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, created_at_column

TASK_STATUSES = ("queued", "running", "waiting", "finished", "failed", "canceled")
FINAL_STATUSES = ("finished", "failed", "canceled")


class LongTask(Base):
    __tablename__ = "long_tasks"
    __table_args__ = (
        Index(  # the claim walks it in order and stops after one batch: highest priority, oldest first
            "ix_long_tasks_claimable",
            text("priority DESC"),
            "id",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
        Index("ix_long_tasks_status_type", "status", "task_type"),
        # room on each page lets step commits and heartbeats (no indexed column changes) be HOT updates
        {"postgresql_with": {"fillfactor": "70"}},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_type: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, server_default="queued")
    state: Mapped[str] = mapped_column(String(100), nullable=False)
    input: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    parent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("long_tasks.id", ondelete="CASCADE"), index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")  # of the current step
    steps_run: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    state_visits: Mapped[dict[str, int]] = mapped_column(JSONB, nullable=False, server_default="{}")
    next_run_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False, server_default="[]")
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
