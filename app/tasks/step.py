"""What a step handler gets: its task's input and data, the worker's resources, and three verbs.

- `spawn(type, input)`: create a child task when this step commits; the parent then waits until
  every child is final and continues in the state the handler returned.
- `on_commit(action)`: run `action(session)` inside the transaction that commits this step, after
  the lease check and before the step's row is written, so the step's own database writes and its
  new state land together or not at all (an action may still add to `data` and `result`).
- `check_canceled()`: raise `TaskCanceled` if cancellation was requested (a long step calls it
  between units of work); the task then ends `canceled`.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import AppError
from app.tasks import repository
from app.tasks.registry import TaskRegistry, TaskType
from app.tasks.views import TaskView

if TYPE_CHECKING:
    from app.llm.base import MemoryModel

CommitAction = Callable[[AsyncSession], Awaitable[None]]


class TaskCanceled(AppError):
    """The task was canceled."""


@dataclass(frozen=True)
class TaskDeps:
    """The worker resources the engine and handlers use (built from the arq context)."""

    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    clock: Callable[[], datetime]
    worker_id: str
    redis: ArqRedis | None = None
    memory_model: MemoryModel | None = None

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection in autocommit mode: one atomic statement without BEGIN/COMMIT trips."""
        engine = self.session_factory.kw.get("bind")
        if not isinstance(engine, AsyncEngine):
            raise AppError("the task session factory must be bound to an AsyncEngine")
        async with engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")


@dataclass
class StepContext:
    """One run of one handler. Mutate `data` to keep state across steps; set `result` before finishing."""

    task: TaskView
    task_type: TaskType
    input: BaseModel
    attempt: int  # 1 on the first try of this step
    deps: TaskDeps
    registry: TaskRegistry
    data: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    cancel_seen: bool = False  # set by the heartbeat when it sees a cancellation request
    children_to_spawn: list[dict[str, Any]] = field(default_factory=list)
    commit_actions: list[CommitAction] = field(default_factory=list)

    @classmethod
    def for_task(
        cls, task: TaskView, task_type: TaskType, parsed: BaseModel, deps: TaskDeps, registry: TaskRegistry
    ) -> StepContext:
        return cls(
            task=task,
            task_type=task_type,
            input=parsed,
            attempt=task.attempts + 1,
            deps=deps,
            registry=registry,
            data=copy.deepcopy(task.data),
            result=copy.deepcopy(task.result),
        )

    @property
    def task_id(self) -> int:
        return self.task.id

    @property
    def state(self) -> str:
        return self.task.state

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    @property
    def session_factory(self) -> async_sessionmaker[AsyncSession]:
        return self.deps.session_factory

    @property
    def redis(self) -> ArqRedis:
        if self.deps.redis is None:
            raise AppError("this step needs Redis, but the worker context has none")
        return self.deps.redis

    @property
    def memory_model(self) -> MemoryModel:
        if self.deps.memory_model is None:
            raise AppError("this step needs a memory model, but the worker context has none")
        return self.deps.memory_model

    def now(self) -> datetime:
        return self.deps.clock()

    def spawn(self, task_type: str, input: dict[str, Any], *, priority: int | None = None) -> None:
        """Create a child when this step commits; raises `ValidationError` now if type or input is bad."""
        declared, parsed = self.registry.validate(task_type, input)
        self.children_to_spawn.append(
            {
                "task_type": declared.name,
                "state": declared.initial,
                "input": parsed.model_dump(mode="json"),
                "priority": self.task.priority if priority is None else priority,
            }
        )

    def on_commit(self, action: CommitAction) -> None:
        """Run `action(session)` in this step's commit transaction, after the lease check."""
        self.commit_actions.append(action)

    async def children(self) -> list[TaskView]:
        """This task's children (spawned by earlier, committed steps), oldest first."""
        async with self.session_factory() as session:
            found = await repository.list_tasks(session, parent_id=self.task_id, limit=10_000)
        return sorted(found, key=lambda view: view.id)

    async def check_canceled(self) -> None:
        """Raise `TaskCanceled` if cancellation of this task has been requested."""
        if not self.cancel_seen:
            async with self.session_factory() as session:
                self.cancel_seen = await repository.read_cancel_requested(session, self.task_id)
        if self.cancel_seen:
            raise TaskCanceled(f"task {self.task_id} was canceled during state {self.state!r}")
