"""`MemoryClient` methods for recording messages and reading topic memory.

async with MemoryClient() as client:
    await client.record_message("chat-1", "msg-1", "Shall we ship on Friday?", user_id="u1")
    memory = await client.get_topic_memory("chat-1", history=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.client_base import ClientBase
from app.l2.scheduling import ReconcileReport, reconcile
from app.l2.schemas import NewMessage, RecordResult, TopicMemoryView
from app.l2.service import L2Deps, get_topic_memory, record_messages, request_update
from app.l2.validation import validate_chat_id


class L2ClientMixin(ClientBase):
    """Mixed into `app.client.MemoryClient`."""

    _l2_deps: L2Deps | None = None

    def _l2(self) -> L2Deps:
        if self._l2_deps is None or self._l2_deps.redis is not self.redis:
            self._l2_deps = L2Deps(self.settings, self.session_factory, self.redis)
        return self._l2_deps

    async def record_message(
        self,
        chat_id: str,
        message_id: str,
        content: str,
        *,
        sent_at: datetime | None = None,
        role: str = "user",
        user_id: str | None = None,
        user_name: str | None = None,
        group_id: str | None = None,
    ) -> RecordResult:
        """Record one message (durable in Postgres first); `sent_at` defaults to now (UTC).

        Recording the same (chat_id, message_id) again is a no-op. Raises `ValidationError` naming the
        field (`messages[0].content`, ...) and writes nothing when the message is invalid."""
        message = NewMessage(
            chat_id=chat_id,
            message_id=message_id,
            content=content,
            sent_at=sent_at if sent_at is not None else datetime.now(UTC),
            role=role,
            user_id=user_id,
            user_name=user_name,
            group_id=group_id,
        )
        return await record_messages(self._l2(), [message])

    async def record_messages(self, messages: Iterable[NewMessage | Mapping[str, Any]]) -> RecordResult:
        """Record a batch (NewMessage objects or dicts with the same fields) in one statement.

        The whole batch is validated first: one bad message rejects it all, naming its index."""
        return await record_messages(self._l2(), messages)

    async def get_topic_memory(
        self, chat_id: str, history: bool = False, history_limit: int = 50
    ) -> TopicMemoryView:
        """The chat's latest topic memory; with `history`, its newest versions too (newest first).

        Raises `NotFoundError` for a chat that was never recorded."""
        return await get_topic_memory(
            self._l2(), validate_chat_id(chat_id), history=history, history_limit=history_limit
        )

    async def request_topic_update(self, chat_id: str) -> str | None:
        """Enqueue an update of the chat now, unless one is queued; returns its job id or None."""
        return await request_update(self._l2(), validate_chat_id(chat_id))

    async def reconcile_l2(self) -> ReconcileReport:
        """Rebuild the Redis L2 state from Postgres and enqueue what is due (safe any time)."""
        return await reconcile(self._l2())
