"""L2 jobs: thin wrappers that run the L2 services under the failure guard.

`task_update_topic_memory(chat_id)` may be enqueued by anyone, as often as they like (services with
arq's `enqueue_job`, the recording path, the scan, the reconcile): with nothing pending it is a
no-op, and two runs for one chat never overlap (the chat's row lock serialises them).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.constants import CRON_L2_RECONCILE, CRON_L2_SCAN, JOB_RECONCILE_L2, JOB_UPDATE_TOPIC_MEMORY
from app.context import WorkerContext
from app.failures.guard import run_guarded
from app.l2.scheduling import reconcile, scan
from app.l2.service import L2Deps, update_topic_memory
from app.l2.validation import validate_chat_id

logger = logging.getLogger(__name__)


def _deps(ctx: WorkerContext) -> L2Deps:
    return L2Deps(
        settings=ctx["settings"],
        session_factory=ctx["session_factory"],
        redis=ctx["redis"],
        clock=ctx["clock"],
    )


async def task_update_topic_memory(ctx: WorkerContext, chat_id: str) -> dict[str, Any]:
    """Fold the chat's oldest pending messages (at most L2_QUEUE_MAX_LEN) into a new topic-memory
    version, committed with what it consumed, together with up to L2_FOLD_BATCH_CHATS - 1 other
    chats whose queued updates have not started; enqueues a follow-up while the pending count is at
    the threshold or a backlog past L2_QUEUE_MAX_LEN remains. Safe to enqueue any time; an unknown
    chat fails once (NotFoundError), recorded."""

    async def body() -> dict[str, Any]:
        chat = validate_chat_id(chat_id)
        outcome = await update_topic_memory(
            _deps(ctx),
            ctx["memory_model"],
            chat,
            job_id=ctx.get("job_id"),
            job_try=ctx.get("job_try"),
            batch_chats=ctx["settings"].fold_batch_chats,
        )
        return outcome.as_dict()

    return await run_guarded(
        ctx,
        JOB_UPDATE_TOPIC_MEMORY,
        {"chat_id": chat_id},
        body,
        subject=("chat", str(chat_id)),
        timeout_seconds=ctx["settings"].l2_job_timeout_seconds,
    )


async def cron_l2_scan(ctx: WorkerContext) -> int:
    """Enqueue an update for every chat that is due; returns how many were enqueued. Idempotent."""

    async def body() -> int:
        return await scan(_deps(ctx))

    return await run_guarded(
        ctx, CRON_L2_SCAN, {}, body, timeout_seconds=ctx["settings"].worker_job_timeout_seconds
    )


async def _reconcile(ctx: WorkerContext, name: str) -> dict[str, int]:
    async def body() -> dict[str, int]:
        report = await reconcile(_deps(ctx))
        return {
            "pending_chats": report.pending_chats,
            "updated_chats": report.updated_chats,
            "enqueued": report.enqueued,
        }

    return await run_guarded(ctx, name, {}, body, timeout_seconds=ctx["settings"].worker_job_timeout_seconds)


async def cron_l2_reconcile(ctx: WorkerContext) -> dict[str, int]:
    """Rebuild the Redis L2 state from Postgres, then enqueue due chats. Idempotent."""
    return await _reconcile(ctx, CRON_L2_RECONCILE)


async def task_reconcile_l2(ctx: WorkerContext) -> dict[str, int]:
    """On-demand reconcile (the same as the cron)."""
    return await _reconcile(ctx, JOB_RECONCILE_L2)


async def on_worker_startup(ctx: WorkerContext) -> None:
    """Reconcile once per worker start, so a flushed Redis or a crashed update is picked up at once.

    A failure here does not stop the worker (its cron reconciles again within
    L2_RECONCILE_INTERVAL_MINUTES); it is logged with its cause."""
    try:
        report = await reconcile(_deps(ctx))
    except (RedisError, SQLAlchemyError, OSError) as exc:
        logger.error(
            "start-up L2 reconcile failed (%s: %s); the reconcile cron retries", type(exc).__name__, exc
        )
        return
    logger.info(
        "L2 reconcile: %d chat(s) pending, %d update(s) enqueued", report.pending_chats, report.enqueued
    )
