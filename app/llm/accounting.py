"""Store the usage of model calls: next to what they produced, or alone when the operation failed.

Success: the service passes `result.usage` to `record_usage` in the same session and transaction as
the memory version it writes, so a rolled-back update leaves no orphan accounting and a committed one
always has its cost.

Failure: calls that produced nothing still cost tokens and time. Every LLM error carries them in
`exc.usage` (`app.llm.errors`); the service's failure path calls `record_failed_usage`, which stores
them in a short transaction of its own (the update's transaction is being rolled back).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.llm.base import Usage
from app.llm.models import LlmCall

logger = logging.getLogger("app.llm")
LLM_CALLS: Table = cast(Table, LlmCall.__table__)


def usage_rows(
    usages: Iterable[Usage], *, job_id: str | None, purpose: str, subject_kind: str, subject_id: str
) -> list[dict[str, Any]]:
    """The `llm_calls` rows of `usages`, for `insert_usage_rows` (several subjects may share one insert)."""
    return [
        {
            "job_id": job_id,
            "provider": usage.provider,
            "model": usage.model,
            "purpose": purpose,
            "subject_kind": subject_kind,
            "subject_id": subject_id,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "latency_ms": usage.latency_ms,
            "cost_usd": usage.cost_usd,
            "ok": usage.ok,
            "error": usage.error,
        }
        for usage in usages
    ]


async def insert_usage_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """One Core insert (no ORM flush: this runs in every topic update); the caller commits."""
    if rows:
        await session.execute(insert(LLM_CALLS), rows)


async def record_usage(
    session: AsyncSession,
    usages: Iterable[Usage],
    *,
    job_id: str | None,
    purpose: str,
    subject_kind: str,
    subject_id: str,
) -> None:
    """Insert one `llm_calls` row per usage; the caller commits."""
    rows = usage_rows(
        usages, job_id=job_id, purpose=purpose, subject_kind=subject_kind, subject_id=subject_id
    )
    await insert_usage_rows(session, rows)


def usage_of(exc: BaseException) -> list[Usage]:
    """The calls a failed model operation made (`exc.usage`), or none for any other error."""
    usage = getattr(exc, "usage", None)
    if not isinstance(usage, list):
        return []
    return [item for item in usage if isinstance(item, Usage)]


async def record_failed_usage(
    session_factory: async_sessionmaker[AsyncSession],
    exc: BaseException,
    *,
    job_id: str | None,
    purpose: str,
    subject_kind: str,
    subject_id: str,
) -> int:
    """Store the calls behind a failed operation in their own transaction; returns how many.

    Call it from the failure path, then re-raise `exc`. It never masks `exc`: if the database itself
    is down, the problem is logged and the original error still propagates.
    """
    usages = usage_of(exc)
    if not usages:
        return 0
    try:
        async with session_factory.begin() as session:
            await record_usage(
                session,
                usages,
                job_id=job_id,
                purpose=purpose,
                subject_kind=subject_kind,
                subject_id=subject_id,
            )
    except (SQLAlchemyError, OSError):  # the original error matters more; the log keeps the rest
        logger.exception("could not record %d failed LLM calls of job %s", len(usages), job_id)
        return 0
    return len(usages)
