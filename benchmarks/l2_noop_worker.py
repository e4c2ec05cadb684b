"""The baseline worker of `bench_l2`: the unified worker's arq settings, with one no-op job only.

    python -m arq benchmarks.l2_noop_worker.NoopWorkerSettings

Same Redis, serializer, max_jobs, poll_delay, timeouts and keep_result=0 as `task_update_topic_memory`,
so the drain rate measured with it is arq's own ceiling for these settings.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from arq import func

from app.config import load_settings
from app.workers.unified_worker import worker_kwargs

NOOP_JOB = "bench_noop"
READY_LINE = "noop worker started"


async def bench_noop(ctx: dict[str, Any], chat_id: str) -> None:
    """Does nothing: what is left is arq's own cost per job."""


async def _on_startup(ctx: dict[str, Any]) -> None:
    logging.getLogger("arq.worker").info(READY_LINE)
    sys.stdout.write(READY_LINE + "\n")
    sys.stdout.flush()


_kwargs = worker_kwargs(load_settings())


class NoopWorkerSettings:
    functions = [func(bench_noop, name=NOOP_JOB, keep_result=0)]
    redis_settings = _kwargs["redis_settings"]
    job_serializer = _kwargs["job_serializer"]
    job_deserializer = _kwargs["job_deserializer"]
    on_startup = _on_startup
    queue_name = _kwargs["queue_name"]
    max_jobs = _kwargs["max_jobs"]
    poll_delay = _kwargs["poll_delay"]
    job_timeout = _kwargs["job_timeout"]
    max_tries = _kwargs["max_tries"]
    keep_result = _kwargs["keep_result"]
    health_check_interval = _kwargs["health_check_interval"]
