"""Evolve jobs (placeholder bodies until the evolve issue fills them in)."""

from __future__ import annotations

from typing import Any

from app.constants import JOB_EVOLVE_MEMORY
from app.context import WorkerContext
from app.failures.guard import run_guarded


async def task_evolve_memory(ctx: WorkerContext, group_id: str) -> dict[str, Any]:
    """Distil the group's consensus from its changed topic memories. Idempotent."""

    async def body() -> dict[str, Any]:
        return {"group_id": group_id, "outcome": "nothing to distil"}

    return await run_guarded(
        ctx,
        JOB_EVOLVE_MEMORY,
        {"group_id": group_id},
        body,
        subject=("group", str(group_id)),
        timeout_seconds=ctx["settings"].evolve_job_timeout_seconds,
    )


async def cron_evolve_daily(ctx: WorkerContext) -> int:
    """Fan out one distillation per changed group, once per day; returns how many were enqueued."""
    return 0


async def on_worker_startup(ctx: WorkerContext) -> None:
    """Runs once per worker process after the context is open."""
