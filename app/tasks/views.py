"""What callers see of a task: a plain snapshot, detached from any database session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class TaskView(BaseModel):
    """One long task as stored. `errors` is the full history: one entry per failed or interrupted try."""

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: int
    task_type: str
    status: str  # queued, running, waiting, finished, failed, canceled
    state: str  # the type's state name
    input: dict[str, Any]
    data: dict[str, Any]
    result: dict[str, Any] | None
    priority: int
    parent_id: int | None
    attempts: int  # failed tries of the current step
    steps_run: int  # committed steps
    state_visits: dict[str, int]
    next_run_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    errors: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def is_final(self) -> bool:
        return self.status in ("finished", "failed", "canceled")
