"""The unified worker: its job and cron lists, a job and a cron end to end, msgpack on the wire,
refusal on an unmigrated database, and a clean SIGTERM shutdown."""

from __future__ import annotations

import pytest
from arq import cron
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from app.client import MemoryClient
from app.config import Settings
from app.constants import (
    CRON_EVOLVE_DAILY,
    CRON_L2_RECONCILE,
    CRON_L2_SCAN,
    CRON_LONG_TASK_POLL,
    JOB_EVOLVE_MEMORY,
    JOB_RECONCILE_L2,
    JOB_RUN_LONG_TASKS,
    JOB_UPDATE_TOPIC_MEMORY,
)
from app.errors import NotMigratedError
from app.serialization import deserialize
from app.tasks.jobs import cron_long_task_poll
from app.workers.unified_worker import worker_kwargs
from tests.support.settings import TEST_POSTGRES_DB, ensure_database, make_test_settings
from tests.support.workers import WorkerProcess, burst_worker


def test_worker_lists_every_job_and_cron_with_schedules_from_settings() -> None:
    settings = make_test_settings(
        l2_scan_interval_minutes=15, evolve_daily_time="03:45", evolve_timezone="Asia/Tokyo"
    )
    kwargs = worker_kwargs(settings)
    names = {function.name for function in kwargs["functions"]}
    assert {JOB_UPDATE_TOPIC_MEMORY, JOB_EVOLVE_MEMORY, JOB_RUN_LONG_TASKS, JOB_RECONCILE_L2} <= names
    crons = {job.name: job for job in kwargs["cron_jobs"]}
    assert set(crons) == {CRON_LONG_TASK_POLL, CRON_L2_SCAN, CRON_L2_RECONCILE, CRON_EVOLVE_DAILY}
    assert crons[CRON_LONG_TASK_POLL].minute is None  # every minute
    assert crons[CRON_L2_SCAN].minute == {0, 15, 30, 45}
    assert (crons[CRON_EVOLVE_DAILY].hour, crons[CRON_EVOLVE_DAILY].minute) == (3, 45)
    assert str(kwargs["timezone"]) == "Asia/Tokyo"
    assert kwargs["poll_delay"] == settings.worker_poll_delay_seconds
    # arq gives a cron one try by default, which would turn our guard's Retry into a lost failure
    assert {job.max_tries for job in crons.values()} == {settings.worker_max_tries + 1}


def test_unified_worker_settings_class_is_what_arq_reads() -> None:
    from app.workers.unified_worker import UnifiedWorkerSettings

    assert {f.name for f in UnifiedWorkerSettings.functions} >= {JOB_UPDATE_TOPIC_MEMORY, JOB_EVOLVE_MEMORY}
    assert UnifiedWorkerSettings.job_serializer.__module__ == "app.serialization"
    assert UnifiedWorkerSettings.job_deserializer.__module__ == "app.serialization"


async def test_burst_worker_runs_an_enqueued_job(settings: Settings, client: MemoryClient) -> None:
    job = await client.enqueue(JOB_EVOLVE_MEMORY, "group-1")
    assert job is not None
    worker = burst_worker(settings)
    await worker.main()
    await worker.close()
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    assert await job.status() == JobStatus.complete
    assert (await job.result(timeout=1))["group_id"] == "group-1"


async def test_burst_worker_runs_a_cron_job(settings: Settings, redis: ArqRedis) -> None:
    poll = cron(cron_long_task_poll, name=CRON_LONG_TASK_POLL, run_at_startup=True, keep_result=60)
    worker = burst_worker(settings, cron_jobs=[poll])
    await worker.main()
    await worker.close()
    assert worker.jobs_complete == 1 and worker.jobs_failed == 0
    results = await redis.all_job_results()
    assert [result.function for result in results] == [CRON_LONG_TASK_POLL]
    assert results[0].success


async def test_job_payload_in_redis_is_msgpack_not_pickle(settings: Settings, client: MemoryClient) -> None:
    job = await client.enqueue(JOB_UPDATE_TOPIC_MEMORY, "chat-9")
    assert isinstance(job, Job)
    raw = await client.redis.get(f"arq:job:{job.job_id}")
    assert raw is not None and raw[:1] != b"\x80"
    assert deserialize(raw)["f"] == JOB_UPDATE_TOPIC_MEMORY
    assert deserialize(raw)["a"] == ["chat-9"]


async def test_worker_refuses_an_unmigrated_database(settings: Settings) -> None:
    empty = f"{TEST_POSTGRES_DB}_empty"
    await ensure_database(settings, empty, recreate=True)
    unmigrated = make_test_settings(empty)
    worker = burst_worker(unmigrated)
    with pytest.raises(NotMigratedError, match="database is at revision none .empty., code expects"):
        await worker.main()
    await worker.close()


async def test_worker_process_refuses_an_unmigrated_database_with_a_clear_line(settings: Settings) -> None:
    empty = f"{TEST_POSTGRES_DB}_empty"
    await ensure_database(settings, empty, recreate=True)
    process = WorkerProcess(make_test_settings(empty))
    code = process.wait(timeout=60)
    assert code != 0
    assert "memory-worker cannot start: database is at revision none (empty)" in process.output
    assert "alembic upgrade head" in process.output


async def test_worker_process_shuts_down_cleanly_on_sigterm(settings: Settings) -> None:
    process = WorkerProcess(settings)
    await process.wait_started()
    code = process.terminate()
    assert code == 0, process.output
    assert "stopped" in process.output


def test_invalid_setting_stops_the_worker_with_one_line(settings: Settings) -> None:
    import subprocess

    from tests.support.settings import settings_env
    from tests.support.workers import PROJECT_ROOT, WORKER_COMMAND

    env = settings_env(settings) | {"L2_QUEUE_TRIGGER_THRESHOLD": "-3"}
    done = subprocess.run(
        WORKER_COMMAND, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "memory-worker: invalid configuration: L2_QUEUE_TRIGGER_THRESHOLD='-3': "
        "Input should be greater than or equal to 1"
    ]
