"""The L2 types services see: a message to record, what recording did, and a chat's topic memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.llm.base import Topic


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A chat message as a service records it (validated by `validate_messages`, not here).

    `message_id` is the service's own id: recording the same (chat_id, message_id) twice is a no-op.
    `group_id` defaults to `chat_id`; `sent_at` must be timezone-aware.
    """

    chat_id: str
    message_id: str
    content: str
    sent_at: datetime
    role: str = "user"
    user_id: str | None = None
    user_name: str | None = None
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What one `record_message(s)` call did.

    `scheduled` is False when Postgres has the messages but Redis could not be updated: nothing is
    lost, the chats are scheduled again by the next reconcile (worker start-up or its cron).
    """

    recorded: int  # new messages stored
    duplicates: int  # already recorded before (same chat_id and message_id)
    # updates enqueued by this call; under load another update job may take one off the queue and
    # fold its chat (the version's job_id says which), so wait on the memory, not on arq's result
    enqueued_job_ids: list[str] = field(default_factory=list)
    scheduled: bool = True


class TopicMemoryVersionView(BaseModel):
    """One committed update of a chat's topic memory."""

    version: int
    topics: list[Topic]
    message_ids: list[int]  # our ids of exactly the messages this version folded
    summarizer: str
    duration_ms: int
    started_at: datetime
    created_at: datetime
    job_id: str | None
    job_try: int | None


class TopicMemoryView(BaseModel):
    """A chat's current topic memory; version 0 means nothing was folded yet."""

    chat_id: str
    group_id: str
    version: int
    topics: list[Topic]
    message_count: int  # messages folded so far
    pending_count: int  # messages recorded and not yet folded
    updated_at: datetime | None
    history: list[TopicMemoryVersionView] | None = None  # newest first, when asked for


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    """What one update of a chat did (the job returns `as_dict()`)."""

    chat_id: str
    version: int
    folded: int
    remaining: int  # still pending after this update (a larger backlog is folded in successive runs)
    follow_up_job_id: str | None = None
    also_folded: dict[str, int] = field(default_factory=dict)  # other chats this job folded -> messages

    def as_dict(self) -> dict[str, Any]:
        outcome = "folded" if self.folded else "nothing pending"
        return {
            "chat_id": self.chat_id,
            "outcome": outcome,
            "version": self.version,
            "folded": self.folded,
            "remaining": self.remaining,
            "follow_up_job_id": self.follow_up_job_id,
            "also_folded": self.also_folded,
        }
