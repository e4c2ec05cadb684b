"""The long-task service: create (validated, never stored when invalid), read, list, cancel, retry.

The client mixin and tests call these with a session factory; kicking a worker is the caller's job
(the client enqueues `task_run_long_tasks` after a create, cancel or retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import app.tasks.builtin  # noqa: F401 - registers the built-in task types in the default registry
from app.errors import NotFoundError, ValidationError
from app.tasks import repository
from app.tasks.models import FINAL_STATUSES, TASK_STATUSES
from app.tasks.registry import FINAL_STATES, TaskRegistry, default_registry
from app.tasks.views import TaskView

PRIORITY_LIMIT = 1_000_000  # |priority| bound, so a typo cannot starve everything else


async def create_task(
    session_factory: async_sessionmaker[AsyncSession],
    task_type: str,
    input: Mapping[str, Any],
    *,
    priority: int = 0,
    parent_id: int | None = None,
    registry: TaskRegistry = default_registry,
) -> TaskView:
    """Validate and store a new task, due now; raises `ValidationError` / `NotFoundError` (parent)."""
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > PRIORITY_LIMIT:
        raise ValidationError(
            "priority", f"must be an integer between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}"
        )
    declared, parsed = registry.validate(task_type, input)
    async with session_factory.begin() as session:
        if parent_id is not None:
            parent = await repository.get_task(session, parent_id)
            if parent is None:
                raise NotFoundError(f"parent task {parent_id} does not exist")
            if parent.status in FINAL_STATUSES:
                raise ValidationError(
                    "parent_id", f"parent task {parent_id} has already ended ({parent.status})"
                )
        created = await repository.insert_task(
            session,
            task_type=declared.name,
            state=declared.initial,
            input=parsed.model_dump(mode="json"),
            priority=priority,
            parent_id=parent_id,
        )
    return created


async def get_task(session_factory: async_sessionmaker[AsyncSession], task_id: int) -> TaskView:
    """The task, or `NotFoundError`."""
    async with session_factory() as session:
        found = await repository.get_task(session, task_id)
    if found is None:
        raise NotFoundError(f"task {task_id} does not exist")
    return found


async def list_tasks(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    status: str | None = None,
    task_type: str | None = None,
    parent_id: int | None = None,
    limit: int = 100,
) -> list[TaskView]:
    """Newest first; `status` must be one of the task statuses."""
    if status is not None and status not in TASK_STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(TASK_STATUSES)}, got {status!r}")
    if not 1 <= limit <= 10_000:
        raise ValidationError("limit", "must be between 1 and 10000")
    async with session_factory() as session:
        return await repository.list_tasks(
            session, status=status, task_type=task_type, parent_id=parent_id, limit=limit
        )


async def cancel_task(
    session_factory: async_sessionmaker[AsyncSession], task_id: int, now: datetime
) -> TaskView:
    """Request cancellation of the task and its unfinished descendants; a worker ends each `canceled`.

    Cancelling a task that has already ended changes nothing and returns it as it is.
    """
    async with session_factory.begin() as session:
        found = await repository.get_task(session, task_id)
        if found is None:
            raise NotFoundError(f"task {task_id} does not exist")
        if found.status not in FINAL_STATES:
            await repository.request_cancel(session, task_id, now)
    return await get_task(session_factory, task_id)


async def retry_task(
    session_factory: async_sessionmaker[AsyncSession], task_id: int, now: datetime
) -> TaskView:
    """Run a failed task again from the state it failed in; only failed tasks can be retried."""
    async with session_factory.begin() as session:
        found = await repository.get_task(session, task_id)
        if found is None:
            raise NotFoundError(f"task {task_id} does not exist")
        if found.status != "failed":
            raise ValidationError(
                "task_id", f"task {task_id} is {found.status}; only a failed task can be retried"
            )
        if found.state in FINAL_STATES:
            raise ValidationError(
                "task_id", f"task {task_id} chose to fail (state {found.state!r}); it cannot resume"
            )
        retried = await repository.retry_failed(session, task_id, now)
    if retried is None:  # changed between the read and the update
        raise ValidationError("task_id", f"task {task_id} is no longer failed")
    return retried
