"""`MemoryClient` methods for reading LLM usage and cost totals."""

from __future__ import annotations

from datetime import datetime

from app.client_base import ClientBase
from app.llm.repository import LlmUsage, usage_totals


class LlmClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""

    async def llm_usage(
        self,
        *,
        job_id: str | None = None,
        chat_id: str | None = None,
        group_id: str | None = None,
        since: datetime | None = None,
    ) -> LlmUsage:
        """Calls, tokens, cost (USD) and latency of model calls, in total and per model.

        Filters combine: `job_id` (one arq job), `chat_id` (its topic updates), `group_id` (its
        distillations plus the topic updates of its chats), `since` (an aware datetime). No filter
        gives the totals of everything recorded. Failed calls are included and counted apart.
        """
        async with self.session_factory() as session:
            return await usage_totals(session, job_id=job_id, chat_id=chat_id, group_id=group_id, since=since)
