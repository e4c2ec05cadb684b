"""The daily distillation with a controlled clock: only changed groups, one distillation per group
per day with racing workers, catch-up after downtime, and a crashed daily run retried that day."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import arq.worker
import pytest
from arq import cron
from arq.connections import ArqRedis
from arq.cron import CronJob
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.constants import CRON_EVOLVE_DAILY, JOB_EVOLVE_MEMORY
from app.errors import TransientError
from app.evolve.daily import distillation_day
from app.evolve.jobs import cron_evolve_daily
from app.evolve.models import EvolveDailyRun, GroupDistillationDay
from app.evolve.repository import mark_daily_run
from app.evolve.service import distil_group
from app.failures.repository import list_failures
from app.llm.offline import OfflineMemoryModel
from app.workers.unified_worker import worker_kwargs
from tests.support.evolve import (
    Clock,
    ConnectionKillingModel,
    add_topic_version,
    asyncpg_url,
    make_topic,
    run_burst_worker,
    versions_of,
    worker_context,
)
from tests.support.workers import worker_process

DAY = date(2026, 3, 10)
AT_SLOT = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)  # the default EVOLVE_DAILY_TIME, UTC


async def topic(session_factory: async_sessionmaker[AsyncSession], group: str, chat: str, point: str) -> None:
    await add_topic_version(session_factory, group, chat, [make_topic("t1", [point])])


async def daily_runs(session_factory: async_sessionmaker[AsyncSession]) -> list[tuple[date, str, int]]:
    async with session_factory() as session:
        rows = (await session.scalars(select(EvolveDailyRun).order_by(EvolveDailyRun.day))).all()
        return [(row.day, row.source, row.groups_enqueued) for row in rows]


async def ledger(session_factory: async_sessionmaker[AsyncSession]) -> list[tuple[str, date, int]]:
    async with session_factory() as session:
        query = select(GroupDistillationDay).order_by(GroupDistillationDay.day, GroupDistillationDay.group_id)
        return [(row.group_id, row.day, row.version) for row in (await session.scalars(query)).all()]


async def test_the_cron_enqueues_only_groups_whose_topic_memories_changed(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    model = OfflineMemoryModel()
    await topic(session_factory, "changed", "chat-1", "We decided to use Postgres")
    await topic(session_factory, "unchanged", "chat-2", "Bob likes tea")
    await distil_group(session_factory, model, "unchanged", AT_SLOT, None)
    await topic(session_factory, "changed-again", "chat-3", "Deploys must go through CI")
    await distil_group(session_factory, model, "changed-again", AT_SLOT, None)
    await topic(session_factory, "changed-again", "chat-4", "Alice prefers tabs")
    await topic(session_factory, "done-today", "chat-5", "The API has 12 endpoints")
    await distil_group(session_factory, model, "done-today", AT_SLOT, None, day=DAY)
    await topic(session_factory, "done-today", "chat-5", "The API has 14 endpoints")

    enqueued = await cron_evolve_daily(worker_context(settings, session_factory, redis, Clock(AT_SLOT)))

    assert enqueued == 2
    queued = sorted(job.job_id for job in await redis.queued_jobs())
    assert queued == ["evolve:daily:2026-03-10:changed", "evolve:daily:2026-03-10:changed-again"]
    assert all(job.kwargs == {"day": "2026-03-10"} for job in await redis.queued_jobs())

    worker = await run_burst_worker(settings, clock=Clock(AT_SLOT))
    assert (worker.jobs_complete, worker.jobs_failed) == (2, 0)
    assert [(v.version, v.trigger, v.day) for v in await versions_of(session_factory, "changed")] == [
        (1, "daily", DAY)
    ]
    assert [v.trigger for v in await versions_of(session_factory, "changed-again")] == ["manual", "daily"]
    assert len(await versions_of(session_factory, "unchanged")) == 1
    assert len(await versions_of(session_factory, "done-today")) == 1
    assert await daily_runs(session_factory) == [(DAY, "cron", 2)]

    assert await cron_evolve_daily(worker_context(settings, session_factory, redis, Clock(AT_SLOT))) == 0


async def test_the_fan_out_prunes_ledger_rows_older_than_90_days(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    async with session_factory.begin() as session:
        for age in (91, 90, 3):
            session.add(GroupDistillationDay(group_id="g", day=DAY - timedelta(days=age), version=1))
    await cron_evolve_daily(worker_context(settings, session_factory, redis, Clock(AT_SLOT)))
    assert [row[1] for row in await ledger(session_factory)] == [
        DAY - timedelta(days=90),
        DAY - timedelta(days=3),
    ]


async def test_two_workers_at_the_slot_distil_each_group_once(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    previous_day = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
    await cron_evolve_daily(
        worker_context(settings, session_factory, redis, Clock(previous_day))
    )  # ran yesterday
    groups = [f"group-{n}" for n in range(6)]
    for n, group in enumerate(groups):
        await topic(session_factory, group, f"chat-{n}", f"We decided to use tool number {n}")

    def daily_cron() -> list[CronJob]:
        return [cron(cron_evolve_daily, name=CRON_EVOLVE_DAILY, run_at_startup=True, unique=True)]

    # both start-ups (catch-up) and both crons fan out the same day; both workers drain the queue
    first, second = await asyncio.gather(
        run_burst_worker(settings, clock=Clock(AT_SLOT), cron_jobs=daily_cron()),
        run_burst_worker(settings, clock=Clock(AT_SLOT), cron_jobs=daily_cron()),
    )

    assert first.jobs_failed == second.jobs_failed == 0
    for group in groups:
        assert [(v.version, v.trigger, v.day) for v in await versions_of(session_factory, group)] == [
            (1, "daily", DAY)
        ]
    assert await ledger(session_factory) == [(group, DAY, 1) for group in groups]
    assert [(day, groups_enqueued) for day, _, groups_enqueued in await daily_runs(session_factory)] == [
        (date(2026, 3, 9), 0),  # yesterday's cron found nothing
        (DAY, 6),
    ]


async def test_the_ledger_refuses_a_second_daily_run_even_when_arq_would_run_it(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    await topic(session_factory, "g1", "chat-1", "We will use Postgres for storage")
    await redis.enqueue_job(JOB_EVOLVE_MEMORY, "g1", day=DAY.isoformat(), _job_id="worker-a:g1")
    await run_burst_worker(settings, clock=Clock(AT_SLOT))
    await topic(session_factory, "g1", "chat-1", "We will use MySQL for storage")
    # a second copy under another id, as a duplicate cron on another worker could enqueue
    job = await redis.enqueue_job(JOB_EVOLVE_MEMORY, "g1", day=DAY.isoformat(), _job_id="worker-b:g1")
    assert job is not None

    await run_burst_worker(settings, clock=Clock(AT_SLOT))

    assert (await job.result(timeout=1))["outcome"] == "already distilled today"
    assert [v.version for v in await versions_of(session_factory, "g1")] == [1]
    assert await ledger(session_factory) == [("g1", DAY, 1)]


async def test_a_worker_down_at_the_slot_catches_up_on_start_once(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    yesterday_slot = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
    await topic(session_factory, "g1", "chat-1", "We will use Postgres for storage")
    await cron_evolve_daily(worker_context(settings, session_factory, redis, Clock(yesterday_slot)))
    await run_burst_worker(settings, clock=Clock(yesterday_slot))
    assert [v.day for v in await versions_of(session_factory, "g1")] == [date(2026, 3, 9)]

    await topic(session_factory, "g1", "chat-1", "We will use MySQL for storage")  # changed during the 9th
    await topic(session_factory, "g2", "chat-2", "Bob likes tea")
    # the workers were down at 02:00 on the 10th; one starts at 09:30
    late = await run_burst_worker(settings, clock=Clock(datetime(2026, 3, 10, 9, 30, tzinfo=UTC)))

    assert (late.jobs_complete, late.jobs_failed) == (2, 0)
    assert [v.day for v in await versions_of(session_factory, "g1")] == [date(2026, 3, 9), DAY]
    assert [v.day for v in await versions_of(session_factory, "g2")] == [DAY]
    assert (await daily_runs(session_factory))[-1] == (DAY, "startup", 2)

    await topic(session_factory, "g2", "chat-2", "Bob likes green tea")
    restarted = await run_burst_worker(settings, clock=Clock(datetime(2026, 3, 10, 10, 0, tzinfo=UTC)))
    before_next_slot = await run_burst_worker(settings, clock=Clock(datetime(2026, 3, 11, 1, 59, tzinfo=UTC)))
    assert restarted.jobs_complete == before_next_slot.jobs_complete == 0  # the 10th is done
    next_day = await run_burst_worker(settings, clock=Clock(datetime(2026, 3, 11, 2, 5, tzinfo=UTC)))
    assert next_day.jobs_complete == 1
    assert [v.day for v in await versions_of(session_factory, "g2")] == [DAY, date(2026, 3, 11)]


async def test_first_start_of_a_deployment_records_a_baseline_and_waits_for_the_slot(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    await topic(session_factory, "g1", "chat-1", "Bob likes tea")
    first = await run_burst_worker(settings, clock=Clock(datetime(2026, 3, 10, 9, 0, tzinfo=UTC)))
    assert first.jobs_complete == 0
    assert await daily_runs(session_factory) == [(DAY, "baseline", 0)]

    next_slot = Clock(datetime(2026, 3, 11, 2, 0, tzinfo=UTC))
    assert await cron_evolve_daily(worker_context(settings, session_factory, redis, next_slot)) == 1


async def test_a_daily_run_that_crashed_before_its_commit_is_retried_the_same_day(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession], redis: ArqRedis
) -> None:
    await topic(session_factory, "g1", "chat-1", "We decided to use Postgres")
    assert await cron_evolve_daily(worker_context(settings, session_factory, redis, Clock(AT_SLOT))) == 1
    model = ConnectionKillingModel(database_url=asyncpg_url(settings))

    worker = await run_burst_worker(settings, clock=Clock(AT_SLOT), model=model)

    assert model.killed == 1 and (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert [(v.version, v.day) for v in await versions_of(session_factory, "g1")] == [(1, DAY)]
    assert await ledger(session_factory) == [("g1", DAY, 1)]


@pytest.mark.slow
async def test_a_real_worker_process_catches_up_the_missed_day_on_start(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    today = distillation_day(datetime.now(UTC), settings.daily_time, settings.tzinfo)
    async with session_factory.begin() as session:  # the deployment ran the day before, then was down
        await mark_daily_run(session, today - timedelta(days=1), 0, "cron", datetime.now(UTC))
    await topic(session_factory, "g1", "chat-1", "We decided to use Postgres")

    with worker_process(settings) as process:
        await process.wait_started()
        deadline = asyncio.get_running_loop().time() + 30
        while not await versions_of(session_factory, "g1"):
            assert asyncio.get_running_loop().time() < deadline, process.output
            await asyncio.sleep(0.1)
        assert process.terminate() == 0, process.output

    [version] = await versions_of(session_factory, "g1")
    assert (version.trigger, version.day) == ("daily", today)
    assert "caught up the daily distillation" in process.output


class FailingOnceClock(Clock):
    """Once armed, its next reading raises a transient fault; later readings work again."""

    armed: bool = False

    def __call__(self) -> datetime:
        if self.armed:
            self.armed = False
            raise TransientError("clock source unavailable")
        return self.now


async def test_a_transient_fault_in_the_daily_cron_is_retried_by_arq(
    settings: Settings,
    session_factory: async_sessionmaker[AsyncSession],
    redis: ArqRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # arq keeps a cron job's in-progress key 60 s after a try, so its retry starts a minute later;
    # shorten that wait (timing only) to keep the test quick. Without max_tries on the registered
    # cron, arq refuses try 2 ("max 1 retries exceeded") and the fault is lost.
    monkeypatch.setattr(arq.worker, "keep_cronjob_progress", 1)
    async with session_factory.begin() as session:  # the deployment ran yesterday: start-up catches up
        await mark_daily_run(session, DAY - timedelta(days=1), 0, "cron", AT_SLOT)
    [registered] = [job for job in worker_kwargs(settings)["cron_jobs"] if job.name == CRON_EVOLVE_DAILY]
    job = await redis.enqueue_job(CRON_EVOLVE_DAILY, _job_id="cron-under-test")
    assert job is not None

    clock = FailingOnceClock(AT_SLOT)

    def arm(ctx: dict[str, object]) -> None:
        clock.armed = True  # after start-up: the cron's first try is the next reading

    worker = await run_burst_worker(settings, clock=clock, cron_jobs=[registered], after_startup=arm)

    info = await job.result_info()
    assert info is not None and info.success, info
    assert (info.job_try, info.result) == (2, 0)  # the start-up catch-up had fanned the day out already
    assert worker.jobs_failed == 0
    assert await list_failures_of(session_factory) == []


async def list_failures_of(session_factory: async_sessionmaker[AsyncSession]) -> list[str]:
    async with session_factory() as session:
        return [failure.reason for failure in await list_failures(session)]
