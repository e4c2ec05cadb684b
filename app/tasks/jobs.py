"""Long-task jobs (placeholder bodies until the long-task issue fills them in)."""

from __future__ import annotations

from app.context import WorkerContext


async def task_run_long_tasks(ctx: WorkerContext) -> int:
    """Claim a batch of due long tasks and run one step of each; returns how many ran."""
    return 0


async def cron_long_task_poll(ctx: WorkerContext) -> int:
    """Every minute: the same as `task_run_long_tasks`."""
    return await task_run_long_tasks(ctx)


async def on_worker_startup(ctx: WorkerContext) -> None:
    """Runs once per worker process after the context is open."""
