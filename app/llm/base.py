"""The memory-model interface: the two LLM operations the engine needs, and their typed data.

Both operations return *drafts*: the model may refer to topics or items it was shown (by the ids we
gave it) or propose new ones, but it never chooses an id; the service validates every reference and
assigns ids itself. Implementations: the deterministic offline default and the OpenAI-compatible
provider. Each call also returns its usage so the caller can store accounting in the same
transaction as the memory it produced.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel, Field

ConsensusKind = Literal["fact", "preference", "decision", "norm", "open_question"]


class MessageIn(BaseModel):
    """A recorded message as the model sees it."""

    id: int  # our database id; drafts refer to messages by it
    author: str  # display name, else user id, else the role
    role: Literal["user", "assistant", "system"]
    content: str
    sent_at: datetime


class Topic(BaseModel):
    """One topic of a chat's memory, as stored (id is ours)."""

    id: str
    title: str
    summary: str
    key_points: list[str] = Field(default_factory=list)
    participants: list[str] = Field(default_factory=list)
    first_message_at: datetime
    last_message_at: datetime
    message_count: int


class TopicDraft(BaseModel):
    """A topic as the model proposes it after reading new messages."""

    existing_id: str | None = None  # a topic id we showed; None proposes a new topic
    title: str
    summary: str
    key_points: list[str] = Field(default_factory=list)
    participants: list[str] = Field(default_factory=list)
    message_ids: list[int] = Field(default_factory=list)  # new messages that belong to this topic


class ConsensusItem(BaseModel):
    """One consensus item of a group's memory, as stored (id is ours)."""

    id: str
    kind: ConsensusKind
    statement: str
    support: list[str] = Field(default_factory=list)  # topic ids (chat_id/topic_id) it rests on


class ConsensusChange(BaseModel):
    """What the model proposes for one item: keep, update or retire one we showed, or add one."""

    action: Literal["keep", "update", "add", "retire"]
    item_id: str | None = None  # required for keep/update/retire; None for add
    kind: ConsensusKind | None = None
    statement: str | None = None
    support: list[str] = Field(default_factory=list)
    reason: str = ""


class TopicSource(BaseModel):
    """A chat's topics at one topic-memory version: the input to a distillation."""

    chat_id: str
    version_id: int
    topics: list[Topic]


class Usage(BaseModel):
    """One model call, for accounting (the offline model reports zero tokens and cost)."""

    provider: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    cost_usd: Decimal = Decimal("0")
    ok: bool = True
    error: str | None = None


class TopicRewrite(BaseModel):
    drafts: list[TopicDraft]
    usage: list[Usage] = Field(default_factory=list)


class ConsensusUpdate(BaseModel):
    changes: list[ConsensusChange]
    usage: list[Usage] = Field(default_factory=list)


class MemoryModel(Protocol):
    """What the update and evolve jobs call; `name` is stored with each version it produces.

    Errors (see `app.llm.errors`): a passing fault raises `app.errors.TransientError` (the job
    retries, honouring `retry_after_seconds`); anything retrying cannot fix raises
    `app.errors.PermanentError` (an invalid answer keeps `raw_answer`). Either carries `usage`, the
    calls made before the failure: store them with `app.llm.accounting.record_failed_usage`.
    """

    name: str

    async def rewrite_topics(
        self, chat_id: str, current: list[Topic], messages: list[MessageIn]
    ) -> TopicRewrite:
        """Fold `messages` (oldest first) into `current`; every message id should land in one draft."""
        ...

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        """Propose keep/update/add/retire changes to `previous` from the group's changed topics."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
