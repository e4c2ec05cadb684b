"""Writing and reading the failures table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.failures.models import JobFailure


async def insert_failure(
    session: AsyncSession,
    *,
    job_id: str | None,
    function: str,
    job_try: int | None,
    arguments: dict[str, Any],
    subject_kind: str | None,
    subject_id: str | None,
    error_type: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> JobFailure:
    failure = JobFailure(
        job_id=job_id,
        function=function,
        job_try=job_try,
        arguments=arguments,
        subject_kind=subject_kind,
        subject_id=subject_id,
        error_type=error_type,
        reason=reason,
        details=details or {},
    )
    session.add(failure)
    await session.flush()
    return failure


async def list_failures(
    session: AsyncSession,
    *,
    function: str | None = None,
    subject_kind: str | None = None,
    subject_id: str | None = None,
    limit: int = 100,
) -> list[JobFailure]:
    """The newest failures first, optionally for one function or subject."""
    query = select(JobFailure).order_by(JobFailure.id.desc()).limit(limit)
    if function is not None:
        query = query.where(JobFailure.function == function)
    if subject_kind is not None:
        query = query.where(JobFailure.subject_kind == subject_kind)
    if subject_id is not None:
        query = query.where(JobFailure.subject_id == subject_id)
    return list((await session.scalars(query)).all())
