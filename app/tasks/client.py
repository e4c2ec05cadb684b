"""`MemoryClient` methods for creating, reading, listing, cancelling and retrying long tasks.

    async with MemoryClient() as client:
        task = await client.create_task("export_memories", {"chat_id": "c1"}, priority=5)
        task = await client.get_task(task.id)      # status, state, data, result, errors
        await client.cancel_task(task.id)          # the task and its children end `canceled`

Invalid requests raise `ValidationError` naming the field (`task_type`, `input.chat_id`, ...) and
store nothing. Every change that makes a task due also enqueues a worker run, so it starts at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.client_base import ClientBase
from app.constants import JOB_RUN_LONG_TASKS
from app.context import utc_now
from app.tasks import service
from app.tasks.views import TaskView


class TaskClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""

    async def create_task(
        self, task_type: str, input: Mapping[str, Any], *, priority: int = 0, parent_id: int | None = None
    ) -> TaskView:
        """Validate and store a task (higher `priority` runs first), then kick a worker."""
        created = await service.create_task(
            self.session_factory, task_type, input, priority=priority, parent_id=parent_id
        )
        await self.kick_tasks()
        return created

    async def get_task(self, task_id: int) -> TaskView:
        """The task as stored; `NotFoundError` if there is none."""
        return await service.get_task(self.session_factory, task_id)

    async def list_tasks(
        self, *, status: str | None = None, task_type: str | None = None, limit: int = 100
    ) -> list[TaskView]:
        """Newest first, optionally only one status and/or type."""
        return await service.list_tasks(self.session_factory, status=status, task_type=task_type, limit=limit)

    async def cancel_task(self, task_id: int) -> TaskView:
        """Request cancellation of the task and its children; workers end them `canceled` shortly."""
        found = await service.cancel_task(self.session_factory, task_id, utc_now())
        await self.kick_tasks()
        return found

    async def retry_task(self, task_id: int) -> TaskView:
        """Resume a failed task from the state it failed in, with its attempts reset."""
        retried = await service.retry_task(self.session_factory, task_id, utc_now())
        await self.kick_tasks()
        return retried

    async def kick_tasks(self) -> None:
        """Enqueue a worker run now instead of waiting for the every-minute poll."""
        await self.enqueue(JOB_RUN_LONG_TASKS)
