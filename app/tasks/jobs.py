"""Long-task jobs: the immediate kick after a create and the every-minute poll run the same engine.

Both are safe to run any number of times at once, on any number of workers: claims use
`SKIP LOCKED` and leases, so each due task is run by exactly one of them.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from app.constants import JOB_RUN_LONG_TASKS
from app.context import WorkerContext
from app.failures.guard import run_guarded
from app.tasks import repository
from app.tasks.engine import run_due_tasks, wake_ready_parents
from app.tasks.registry import default_registry
from app.tasks.step import TaskDeps

logger = logging.getLogger("app.tasks")


def task_deps(ctx: WorkerContext) -> TaskDeps:
    """The engine's view of the worker context (the lease owner is the worker id)."""
    return TaskDeps(
        settings=ctx["settings"],
        session_factory=ctx["session_factory"],
        clock=ctx["clock"],
        worker_id=ctx["worker_id"],
        redis=ctx.get("redis"),
        memory_model=ctx.get("memory_model"),
    )


async def task_run_long_tasks(ctx: WorkerContext) -> dict[str, Any]:
    """Claim due long tasks and run their steps until none is due or the run budget is spent.

    Returns {"claimed": tasks leased, "steps": steps committed}. When the budget ran out with work
    left, it enqueues itself once more so the work continues without waiting for the next poll.
    """

    async def body() -> dict[str, Any]:
        deps = task_deps(ctx)
        summary = await run_due_tasks(deps)
        if summary.more_due:
            await ctx["redis"].enqueue_job(JOB_RUN_LONG_TASKS)
        elif summary.claimed:
            await _run_again_at_next_retry(ctx, deps)
        return {"claimed": summary.claimed, "steps": summary.steps}

    return await run_guarded(
        ctx, JOB_RUN_LONG_TASKS, {}, body, timeout_seconds=ctx["settings"].long_task_job_timeout_seconds
    )


async def _run_again_at_next_retry(ctx: WorkerContext, deps: TaskDeps) -> None:
    """Enqueue a run deferred to the next retry due within LONG_TASK_RETRY_KICK_SECONDS, so a short
    backoff is kept instead of stretched to the minute poll. Only a run that claimed something does
    this, so a deferred run that finds nothing due ends the chain. One job id per due second:
    workers that finish runs at the same time schedule it once."""
    horizon = deps.settings.long_task_retry_kick_seconds
    if horizon <= 0:
        return
    now = deps.clock()
    async with deps.session_factory() as session:
        due = await repository.next_due_at(session, now, now + timedelta(seconds=horizon))
    if due is not None:
        await ctx["redis"].enqueue_job(
            JOB_RUN_LONG_TASKS,
            _job_id=f"{JOB_RUN_LONG_TASKS}:at:{math.ceil(due.timestamp())}",
            _defer_by=max((due - now).total_seconds(), 0.0),
        )


async def cron_long_task_poll(ctx: WorkerContext) -> dict[str, Any]:
    """Every minute: wake parents whose children all ended (a safety net), then run due tasks."""
    woken = await wake_ready_parents(task_deps(ctx))
    if woken:
        logger.info("long-task poll: %s waiting task(s) had all children final; resumed", woken)
    return await task_run_long_tasks(ctx)


async def on_worker_startup(ctx: WorkerContext) -> None:
    """Register the task types of `LONG_TASK_TYPE_MODULES` (the built-ins are always registered)."""
    import app.tasks.builtin  # noqa: F401 - registers the built-in types

    added = default_registry.load_modules(ctx["settings"].long_task_type_modules)
    if added:
        logger.info("long-task types loaded: %s", ", ".join(added))
