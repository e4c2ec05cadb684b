"""One run of the long-task engine: claim due tasks in batches, run them side by side, release them.

The run keeps `LONG_TASK_POLL_BATCH_SIZE` tasks in flight: whenever one stops (ends, waits for
children, backs off after a failure), the freed slot is refilled by another claim, until nothing
is due or `LONG_TASK_RUN_BUDGET_SECONDS` have passed. Each claim is one short transaction
(`SELECT ... FOR UPDATE SKIP LOCKED` + lease), never held while a step runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from app.tasks import repository
from app.tasks.channel import StatementChannel
from app.tasks.registry import TaskRegistry, default_registry
from app.tasks.runner import TaskRunner
from app.tasks.step import TaskDeps
from app.tasks.views import TaskView

logger = logging.getLogger("app.tasks")


@dataclass
class RunSummary:
    claimed: int = 0
    steps: int = 0
    more_due: bool = False  # the budget ran out with tasks still due: the caller should kick another run
    errors: list[BaseException] = field(default_factory=list)


async def claim(
    deps: TaskDeps, owner: str, limit: int, channel: StatementChannel | None = None
) -> list[TaskView]:
    """Lease up to `limit` due tasks to `owner` in one statement (its own short transaction)."""
    now = deps.clock()
    lease_until = now + timedelta(seconds=deps.settings.long_task_lock_timeout_seconds)
    async with channel.use() if channel is not None else deps.autocommit() as connection:
        return await repository.claim_tasks(
            connection, owner=owner, now=now, lease_until=lease_until, limit=limit
        )


async def wake_ready_parents(deps: TaskDeps) -> int:
    """Make due every waiting task whose children are all final (a safety net run by the poll)."""
    async with deps.session_factory.begin() as session:
        return await repository.wake_ready_parents(session, deps.clock())


async def run_due_tasks(
    deps: TaskDeps, registry: TaskRegistry = default_registry, *, budget_seconds: float | None = None
) -> RunSummary:
    """Run due tasks until none is left or the budget is spent; returns what was done.

    The lease owner is this worker's id plus a per-run nonce, so two runs in one process never
    mistake each other's leases for their own.
    """
    owner = f"{deps.worker_id}:{uuid.uuid4().hex[:8]}"
    budget = deps.settings.long_task_run_budget_seconds if budget_seconds is None else budget_seconds
    deadline = time.monotonic() + budget
    async with StatementChannel(deps) as channel:
        summary = await _run(deps, registry, owner, deadline, channel)
    if time.monotonic() >= deadline:
        async with deps.session_factory() as session:
            summary.more_due = await repository.any_due(session, deps.clock())
    if summary.errors:
        raise summary.errors[0]
    return summary


async def _run(
    deps: TaskDeps, registry: TaskRegistry, owner: str, deadline: float, channel: StatementChannel
) -> RunSummary:
    batch = deps.settings.long_task_poll_batch_size
    runner = TaskRunner(deps, registry, owner, deadline, channel)
    summary = RunSummary()
    running: set[asyncio.Task[int]] = set()
    try:
        while True:
            if len(running) < batch and time.monotonic() < deadline and not summary.errors:
                claimed = await claim(deps, owner, batch - len(running), channel)
                summary.claimed += len(claimed)
                running.update(asyncio.create_task(runner.run(task)) for task in claimed)
            if not running:
                break
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                _collect(finished, summary)
    except asyncio.CancelledError:
        for pending in running:  # each records its interrupted step and releases its lease
            pending.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise
    except Exception:  # a claim failed: let the runners finish and release before reporting it
        await asyncio.gather(*running, return_exceptions=True)
        raise
    return summary


def _collect(finished: asyncio.Task[int], summary: RunSummary) -> None:
    """Count a runner's steps; keep its infrastructure error (its lease expires; the task is retried)."""
    error = finished.exception()
    if error is None:
        summary.steps += finished.result()
        return
    logger.error("long-task runner stopped: %s: %s", type(error).__name__, error)
    summary.errors.append(error)
