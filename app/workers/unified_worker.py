"""The one arq worker: every job function and cron job, and the context they share.

Start it with `arq app.workers.unified_worker.UnifiedWorkerSettings`. This module only wires things
together; job bodies live in their domain packages (`app.l2`, `app.evolve`, `app.tasks`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, cast

from arq import cron, func
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function

from app.config import Settings, load_settings
from app.constants import (
    CRON_EVOLVE_DAILY,
    CRON_L2_RECONCILE,
    CRON_L2_SCAN,
    CRON_LONG_TASK_POLL,
    JOB_EVOLVE_MEMORY,
    JOB_RECONCILE_L2,
    JOB_RUN_LONG_TASKS,
    JOB_UPDATE_TOPIC_MEMORY,
    L2_RECONCILE_INTERVAL_MINUTES,
)
from app.context import WorkerContext, utc_now
from app.db.connect import wait_for_database
from app.db.engine import create_engine, create_session_factory
from app.db.schema_check import assert_migrated
from app.errors import AppError
from app.evolve import jobs as evolve_jobs
from app.l2 import jobs as l2_jobs
from app.llm.factory import build_memory_model
from app.logging_setup import configure_logging
from app.redis_settings import build_redis_settings
from app.serialization import deserialize, serialize
from app.tasks import jobs as task_jobs

logger = logging.getLogger("app.worker")
StartupHook = Callable[[WorkerContext], Awaitable[None]]
DOMAIN_STARTUP_HOOKS: tuple[StartupHook, ...] = (
    l2_jobs.on_worker_startup,  # reconcile Redis L2 state from Postgres
    evolve_jobs.on_worker_startup,  # catch up a missed daily distillation
    task_jobs.on_worker_startup,
)


def _coroutine(job: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """Our jobs take the typed `WorkerContext`; arq types the context as a plain dict."""
    return cast(WorkerCoroutine, job)


def job_functions(settings: Settings) -> list[Function]:
    """Every job a service or cron may enqueue, with its own timeout (seconds)."""
    return [
        func(
            _coroutine(l2_jobs.task_update_topic_memory),
            name=JOB_UPDATE_TOPIC_MEMORY,
            timeout=settings.l2_job_timeout_seconds,
            keep_result=0,  # a kept result would block the next update of the chat under arq's id dedup
        ),
        func(
            _coroutine(l2_jobs.task_reconcile_l2),
            name=JOB_RECONCILE_L2,
            timeout=settings.worker_job_timeout_seconds,
        ),
        func(
            _coroutine(evolve_jobs.task_evolve_memory),
            name=JOB_EVOLVE_MEMORY,
            timeout=settings.evolve_job_timeout_seconds,
        ),
        func(
            _coroutine(task_jobs.task_run_long_tasks),
            name=JOB_RUN_LONG_TASKS,
            timeout=settings.long_task_job_timeout_seconds,
            keep_result=0,  # every create/cancel/retry kicks a run; their results would only pile up
        ),
    ]


def cron_jobs(settings: Settings) -> list[CronJob]:
    """Every cron, scheduled from the settings (evaluated in EVOLVE_TIMEZONE); each target is idempotent."""
    daily = settings.daily_time
    common: dict[str, Any] = {
        "unique": True,
        "keep_result": settings.worker_keep_result_seconds,
        "timeout": settings.worker_job_timeout_seconds,
        "max_tries": settings.worker_max_tries + 1,  # arq's cron default (1 try) would drop our guard's Retry
    }
    return [
        cron(
            _coroutine(task_jobs.cron_long_task_poll),
            name=CRON_LONG_TASK_POLL,
            minute=None,
            second=0,
            **common,
        ),
        cron(
            _coroutine(l2_jobs.cron_l2_scan),
            name=CRON_L2_SCAN,
            minute=set(range(0, 60, settings.l2_scan_interval_minutes)),
            second=0,
            **common,
        ),
        cron(
            _coroutine(l2_jobs.cron_l2_reconcile),
            name=CRON_L2_RECONCILE,
            minute=set(range(3, 60, L2_RECONCILE_INTERVAL_MINUTES)),
            second=30,
            **common,
        ),
        cron(
            _coroutine(evolve_jobs.cron_evolve_daily),
            name=CRON_EVOLVE_DAILY,
            hour=daily.hour,
            minute=daily.minute,
            second=0,
            **common,
        ),
    ]


async def on_startup(ctx: dict[str, Any], *, settings: Settings) -> None:
    """Open the engine and LLM client, refuse an unmigrated database, then run domain start-up hooks."""
    configure_logging()
    context = cast(WorkerContext, ctx)
    engine = create_engine(settings)
    context["settings"] = settings
    context["engine"] = engine
    context["session_factory"] = create_session_factory(engine)
    context["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    context.setdefault("clock", utc_now)
    try:
        await wait_for_database(engine, settings.db_connect_retries, settings.database_display)
        await assert_migrated(engine)
    except AppError as exc:
        await engine.dispose()
        logger.critical("memory-worker cannot start: %s", exc)
        raise
    context["memory_model"] = build_memory_model(settings)
    for hook in DOMAIN_STARTUP_HOOKS:
        await hook(context)
    logger.info("memory-worker %s started: database %s", context["worker_id"], settings.database_display)


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Close what `on_startup` opened (it may have stopped half-way)."""
    context = cast(WorkerContext, ctx)
    if "memory_model" in context:
        await context["memory_model"].aclose()
    if "engine" in context:
        await context["engine"].dispose()
    logger.info("memory-worker %s stopped", context.get("worker_id", "?"))


def worker_kwargs(settings: Settings) -> dict[str, Any]:
    """The arq `Worker` arguments for these settings (tests build burst workers from this)."""
    return {
        "functions": job_functions(settings),
        "cron_jobs": cron_jobs(settings),
        "redis_settings": build_redis_settings(settings),
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "on_startup": partial(on_startup, settings=settings),
        "on_shutdown": on_shutdown,
        "queue_name": settings.arq_queue_name,
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_delay_seconds,
        "job_timeout": settings.worker_job_timeout_seconds,
        "max_tries": settings.worker_max_tries + 1,  # our guard records the last try itself
        "keep_result": settings.worker_keep_result_seconds,
        "health_check_interval": settings.worker_health_check_interval_seconds,
        "timezone": settings.tzinfo,
    }


def _settings_or_exit() -> Settings:
    """Invalid settings stop the process with one clear line, not a traceback."""
    try:
        return load_settings()
    except AppError as exc:
        print(f"memory-worker: {exc}", file=sys.stderr)  # noqa: T201 - the one line an operator must see
        raise SystemExit(2) from None


_kwargs = worker_kwargs(_settings_or_exit())


class UnifiedWorkerSettings:
    """What `arq` reads: every job, every cron, the connection, the serializer and the limits."""

    functions = _kwargs["functions"]
    cron_jobs = _kwargs["cron_jobs"]
    redis_settings = _kwargs["redis_settings"]
    job_serializer = _kwargs["job_serializer"]
    job_deserializer = _kwargs["job_deserializer"]
    on_startup = _kwargs["on_startup"]
    on_shutdown = _kwargs["on_shutdown"]
    queue_name = _kwargs["queue_name"]
    max_jobs = _kwargs["max_jobs"]
    poll_delay = _kwargs["poll_delay"]
    job_timeout = _kwargs["job_timeout"]
    max_tries = _kwargs["max_tries"]
    keep_result = _kwargs["keep_result"]
    health_check_interval = _kwargs["health_check_interval"]
    timezone = _kwargs["timezone"]
