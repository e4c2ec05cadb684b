"""Store the usage of model calls next to what they produced (same session, same transaction)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from app.llm.base import Usage
from app.llm.models import LlmCall


async def record_usage(
    session: AsyncSession,
    usages: Iterable[Usage],
    *,
    job_id: str | None,
    purpose: str,
    subject_kind: str,
    subject_id: str,
) -> None:
    """Add one `llm_calls` row per usage; the caller commits."""
    for usage in usages:
        session.add(
            LlmCall(
                job_id=job_id,
                provider=usage.provider,
                model=usage.model,
                purpose=purpose,
                subject_kind=subject_kind,
                subject_id=subject_id,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_ms=usage.latency_ms,
                cost_usd=usage.cost_usd,
                ok=usage.ok,
                error=usage.error,
            )
        )
