"""L2 jobs (placeholder bodies until the L2 issue fills them in)."""

from __future__ import annotations

from typing import Any

from app.constants import JOB_UPDATE_TOPIC_MEMORY
from app.context import WorkerContext
from app.failures.guard import run_guarded


async def task_update_topic_memory(ctx: WorkerContext, chat_id: str) -> dict[str, Any]:
    """Fold the chat's pending messages into a new topic-memory version. Safe to enqueue any time."""

    async def body() -> dict[str, Any]:
        return {"chat_id": chat_id, "folded": 0}

    return await run_guarded(
        ctx,
        JOB_UPDATE_TOPIC_MEMORY,
        {"chat_id": chat_id},
        body,
        subject=("chat", str(chat_id)),
        timeout_seconds=ctx["settings"].l2_job_timeout_seconds,
    )


async def cron_l2_scan(ctx: WorkerContext) -> int:
    """Enqueue an update for every chat that is due by time; returns how many were enqueued."""
    return 0


async def cron_l2_reconcile(ctx: WorkerContext) -> int:
    """Rebuild the Redis L2 state from Postgres."""
    return 0


async def task_reconcile_l2(ctx: WorkerContext) -> int:
    """On-demand reconcile (the same as the cron)."""
    return await cron_l2_reconcile(ctx)


async def on_worker_startup(ctx: WorkerContext) -> None:
    """Runs once per worker process after the context is open."""
