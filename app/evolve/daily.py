"""The daily fan-out: which local day a moment belongs to, and one job per changed group for it.

A *distillation day* is the local date (EVOLVE_TIMEZONE) whose slot (EVOLVE_DAILY_TIME) most
recently passed: with the default 02:00, 01:30 on the 5th belongs to the 4th and 02:00 to the 5th.

Once per group per day, in layers:
1. each daily job carries its day and a deterministic arq job id `evolve:daily:<day>:<group>`, so
   arq refuses a second copy while the first is queued, running or its result is kept;
2. the fan-out skips groups that already hold that day's ledger row;
3. the job itself checks and inserts the ledger row under the group's lock, in the same transaction
   as the version; the primary key `(group_id, day)` is the final guard. A run that crashed before
   its commit leaves no row, so arq's retry (or a later fan-out of that day) still distils the group.

Retention: each fan-out prunes ledger rows older than EVOLVE_LEDGER_KEEP_DAYS (90) days, so the
table holds about 90 rows per group; the versions themselves keep their day for good.

Catch-up: `evolve_daily_runs` records that a day's fan-out finished. A worker that starts after the
day's slot passed runs the fan-out unless that row exists; only the latest day is caught up (a
distillation reads every change since the previous one, so missed days add nothing). The very first
start of a deployment (no row at all) missed nothing: it records the latest day as a `baseline`
and the first daily run happens at the next slot (a manual run distils earlier if wanted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.constants import EVOLVE_DAILY_JOB_PREFIX, EVOLVE_LEDGER_KEEP_DAYS, JOB_EVOLVE_MEMORY
from app.errors import ValidationError
from app.evolve import repository as repo

logger = logging.getLogger("app.evolve")


@dataclass(frozen=True)
class FanOut:
    day: date
    groups: list[str]  # changed groups found for the day
    enqueued: int  # jobs arq accepted (a job already queued or kept under its id is not counted)
    skipped: str | None = None  # why nothing was looked at, e.g. the day was already fanned out


def distillation_day(now: datetime, daily_time: time, tz: ZoneInfo) -> date:
    """The local day whose daily slot most recently passed at `now` (an aware datetime)."""
    if now.tzinfo is None:
        raise ValidationError("now", "must be timezone-aware")
    local = now.astimezone(tz)
    if local.time().replace(tzinfo=None) >= daily_time:
        return local.date()
    return local.date() - timedelta(days=1)


def daily_job_id(group_id: str, day: date) -> str:
    return f"{EVOLVE_DAILY_JOB_PREFIX}{day.isoformat()}:{group_id}"


def parse_day(value: str | None) -> date | None:
    """The `day` argument of a daily job (ISO date), or None for a manual run."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationError("day", f"must be an ISO date such as 2026-01-31, got {value!r}") from None


async def fan_out_daily(
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    settings: Settings,
    now: datetime,
    *,
    source: str,
) -> FanOut:
    """Enqueue one daily `task_evolve_memory` per changed group for the day of `now`; idempotent."""
    day = distillation_day(now, settings.daily_time, settings.tzinfo)
    async with session_factory() as session:
        if await repo.daily_run_done(session, day):
            return FanOut(day, [], 0, skipped=f"the fan-out of {day} already ran")
        groups = await repo.changed_groups(session, day)
    enqueued = 0
    for group_id in groups:
        job = await redis.enqueue_job(
            JOB_EVOLVE_MEMORY,
            group_id,
            day=day.isoformat(),
            _job_id=daily_job_id(group_id, day),
            _queue_name=settings.arq_queue_name,
        )
        enqueued += job is not None
    async with session_factory.begin() as session:
        await repo.mark_daily_run(session, day, len(groups), source, now)
        pruned = await repo.prune_distillation_days(session, day - timedelta(days=EVOLVE_LEDGER_KEEP_DAYS))
    logger.info(
        "daily distillation of %s (%s): %d changed groups, %d jobs enqueued, %d ledger rows pruned",
        day,
        source,
        len(groups),
        enqueued,
        pruned,
    )
    return FanOut(day, groups, enqueued)


async def catch_up_daily(
    session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis, settings: Settings, now: datetime
) -> FanOut:
    """At worker start: run the latest day's fan-out if it was missed (see the module docstring)."""
    day = distillation_day(now, settings.daily_time, settings.tzinfo)
    async with session_factory.begin() as session:
        if not await repo.any_daily_run(session):
            await repo.mark_daily_run(session, day, 0, "baseline", now)
            return FanOut(day, [], 0, skipped="first start of this deployment: nothing was missed")
    return await fan_out_daily(session_factory, redis, settings, now, source="startup")
