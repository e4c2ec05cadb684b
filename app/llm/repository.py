"""Reading LLM accounting: totals over `llm_calls`, filtered by job, chat, group or time."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.l2.models import TopicMemory
from app.llm.models import LlmCall


class LlmUsageTotals(BaseModel):
    """Sums over a set of model calls (failed calls included: they cost time and often tokens)."""

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal("0")
    latency_ms: int = 0  # summed over the calls

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LlmUsage(LlmUsageTotals):
    """Totals, and the same sums per model (`provider:model`)."""

    by_model: dict[str, LlmUsageTotals] = Field(default_factory=dict)


def _filters(
    job_id: str | None, chat_id: str | None, group_id: str | None, since: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if job_id is not None:
        conditions.append(LlmCall.job_id == job_id)
    if chat_id is not None:
        conditions.append(and_(LlmCall.subject_kind == "chat", LlmCall.subject_id == chat_id))
    if group_id is not None:
        chats_of_group = select(TopicMemory.chat_id).where(TopicMemory.group_id == group_id)
        conditions.append(
            or_(
                and_(LlmCall.subject_kind == "group", LlmCall.subject_id == group_id),
                and_(LlmCall.subject_kind == "chat", LlmCall.subject_id.in_(chats_of_group)),
            )
        )
    if since is not None:
        conditions.append(LlmCall.created_at >= since)
    return conditions


async def usage_totals(
    session: AsyncSession,
    *,
    job_id: str | None = None,
    chat_id: str | None = None,
    group_id: str | None = None,
    since: datetime | None = None,
) -> LlmUsage:
    """Totals of the matching calls; a group's include its chats' topic updates and its distillations."""
    query = (
        select(
            LlmCall.provider,
            LlmCall.model,
            func.count(),
            func.count().filter(LlmCall.ok.is_(False)),
            func.coalesce(func.sum(LlmCall.prompt_tokens), 0),
            func.coalesce(func.sum(LlmCall.completion_tokens), 0),
            func.coalesce(func.sum(LlmCall.cost_usd), 0),
            func.coalesce(func.sum(LlmCall.latency_ms), 0),
        )
        .where(*_filters(job_id, chat_id, group_id, since))
        .group_by(LlmCall.provider, LlmCall.model)
        .order_by(LlmCall.provider, LlmCall.model)
    )
    usage = LlmUsage()
    for provider, model, calls, failed, prompt, completion, cost, latency in (
        await session.execute(query)
    ).all():
        row = LlmUsageTotals(
            calls=calls,
            failed_calls=failed,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=Decimal(cost),
            latency_ms=latency,
        )
        usage.by_model[f"{provider}:{model}"] = row
        usage.calls += row.calls
        usage.failed_calls += row.failed_calls
        usage.prompt_tokens += row.prompt_tokens
        usage.completion_tokens += row.completion_tokens
        usage.cost_usd += row.cost_usd
        usage.latency_ms += row.latency_ms
    return usage
