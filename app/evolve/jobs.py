"""Evolve jobs: distil one group now, the daily fan-out cron, and the start-up catch-up.

Services trigger a distillation with
`await redis.enqueue_job("task_evolve_memory", group_id)` (or
`MemoryClient.request_group_distillation(group_id)`): a *manual* run, outside the daily ledger.
"""

from __future__ import annotations

import logging
from typing import Any

from app.constants import CRON_EVOLVE_DAILY, JOB_EVOLVE_MEMORY
from app.context import WorkerContext
from app.evolve.daily import catch_up_daily, fan_out_daily, parse_day
from app.evolve.service import distil_group
from app.failures.guard import record_failure, run_guarded

logger = logging.getLogger("app.evolve")


async def task_evolve_memory(ctx: WorkerContext, group_id: str, day: str | None = None) -> dict[str, Any]:
    """Distil the group's consensus from its changed topic memories; returns the outcome.

    `day` (ISO date) is set only by the daily fan-out and makes this that day's one daily run.
    Idempotent and safe to retry: nothing new -> no new version, and the result says so.
    """

    async def body() -> dict[str, Any]:
        result = await distil_group(
            ctx["session_factory"],
            ctx["memory_model"],
            group_id,
            ctx["clock"](),
            ctx.get("job_id"),
            day=parse_day(day),
        )
        return result.as_dict()

    return await run_guarded(
        ctx,
        JOB_EVOLVE_MEMORY,
        {"group_id": group_id, "day": day},
        body,
        subject=("group", str(group_id)),
        timeout_seconds=ctx["settings"].evolve_job_timeout_seconds,
    )


async def cron_evolve_daily(ctx: WorkerContext) -> int:
    """Fan out one distillation per changed group, once per day; returns how many were enqueued."""

    async def body() -> int:
        fan_out = await fan_out_daily(
            ctx["session_factory"], ctx["redis"], ctx["settings"], ctx["clock"](), source="cron"
        )
        return fan_out.enqueued

    return await run_guarded(
        ctx, CRON_EVOLVE_DAILY, {}, body, timeout_seconds=ctx["settings"].worker_job_timeout_seconds
    )


async def on_worker_startup(ctx: WorkerContext) -> None:
    """Catch up the latest daily fan-out if the workers were down at its slot (see `app.evolve.daily`).

    A failure here is logged and recorded in `job_failures` but does not stop the worker: its other
    jobs still run, and the next start or the next day's cron fans out again.
    """
    try:
        fan_out = await catch_up_daily(ctx["session_factory"], ctx["redis"], ctx["settings"], ctx["clock"]())
    except Exception as exc:  # recorded and logged below; start-up of the other domains must go on
        logger.exception("catch-up of the daily distillation failed")
        await record_failure(ctx, CRON_EVOLVE_DAILY, {"source": "startup"}, None, exc)
        return
    if fan_out.skipped is None:
        logger.info("caught up the daily distillation of %s: %d jobs enqueued", fan_out.day, fan_out.enqueued)
