"""Folding messages into topics: call the model, then apply its drafts under our rules.

This module touches neither Postgres nor Redis, so anything may reuse it (the update job, a long
task that rebuilds a chat's memory from scratch). The rules, whatever the model answers:
- topic ids are ours: `t<n>` from the chat's `next_topic_number`; a draft may only *refer* to a
  topic it was shown (`existing_id`), an unknown id is treated as a new topic, never as a key;
- a draft's `message_ids` count only if they are in this batch and not already claimed by an
  earlier draft; a new topic with no valid message is dropped;
- existing topics no draft mentions are kept unchanged (a model that forgets a topic loses nothing);
- every message of the batch is folded by the version, even one no draft claimed (it is listed in
  `unassigned`), so a model that keeps skipping a message cannot stall the chat;
- at most `L2_MAX_TOPICS` topics are kept: the least recently active are retired (history has them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.constants import L2_MAX_TOPICS
from app.llm.base import MemoryModel, MessageIn, Topic, TopicDraft, Usage

logger = logging.getLogger(__name__)
TITLE_MAX_CHARS = 200
SUMMARY_MAX_CHARS = 4000
KEY_POINTS_MAX = 10
KEY_POINT_MAX_CHARS = 500
PARTICIPANTS_MAX = 50


@dataclass(frozen=True)
class FoldResult:
    """The topics after folding one batch, and what produced them."""

    topics: list[Topic]
    next_topic_number: int
    summarizer: str
    usage: list[Usage] = field(default_factory=list)
    unassigned: list[int] = field(default_factory=list)  # folded message ids no draft claimed
    retired: list[str] = field(default_factory=list)  # topic ids dropped by the cap


def topic_id(number: int) -> str:
    return f"t{number}"


def _clip(value: str, limit: int) -> str:
    value = value.strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _texts(draft: TopicDraft) -> dict[str, object]:
    return {
        "title": _clip(draft.title, TITLE_MAX_CHARS) or "Untitled topic",
        "summary": _clip(draft.summary, SUMMARY_MAX_CHARS),
        "key_points": [_clip(p, KEY_POINT_MAX_CHARS) for p in draft.key_points if p.strip()][:KEY_POINTS_MAX],
        "participants": list(dict.fromkeys(p.strip() for p in draft.participants if p.strip()))[
            :PARTICIPANTS_MAX
        ],
    }


def _updated(old: Topic, draft: TopicDraft, messages: list[MessageIn]) -> Topic:
    first = min([old.first_message_at, *(m.sent_at for m in messages)])
    last = max([old.last_message_at, *(m.sent_at for m in messages)])
    return old.model_copy(
        update={
            **_texts(draft),
            "first_message_at": first,
            "last_message_at": last,
            "message_count": old.message_count + len(messages),
        }
    )


def _created(new_id: str, draft: TopicDraft, messages: list[MessageIn]) -> Topic:
    return Topic.model_validate(
        {
            "id": new_id,
            **_texts(draft),
            "first_message_at": min(m.sent_at for m in messages),
            "last_message_at": max(m.sent_at for m in messages),
            "message_count": len(messages),
        }
    )


def apply_drafts(
    current: Sequence[Topic],
    next_topic_number: int,
    messages: Sequence[MessageIn],
    drafts: Sequence[TopicDraft],
) -> tuple[list[Topic], int, list[int], list[str]]:
    """Apply drafts to `current`: (topics, next topic number, unassigned ids, retired topic ids)."""
    topics = {topic.id: topic for topic in current}
    batch = {message.id: message for message in messages}
    claimed: set[int] = set()
    for draft in drafts:
        ids = [i for i in dict.fromkeys(draft.message_ids) if i in batch and i not in claimed]
        claimed.update(ids)
        drafted = [batch[i] for i in ids]
        if draft.existing_id is not None and draft.existing_id in topics:
            topics[draft.existing_id] = _updated(topics[draft.existing_id], draft, drafted)
        elif drafted:
            new_id = topic_id(next_topic_number)
            next_topic_number += 1
            topics[new_id] = _created(new_id, draft, drafted)
    unassigned = [m.id for m in messages if m.id not in claimed]
    kept = list(topics.values())
    retired: list[str] = []
    if len(kept) > L2_MAX_TOPICS:
        by_activity = sorted(kept, key=lambda t: (t.last_message_at, t.id), reverse=True)
        keep_ids = {t.id for t in by_activity[:L2_MAX_TOPICS]}
        retired = [t.id for t in kept if t.id not in keep_ids]
        kept = [t for t in kept if t.id in keep_ids]
    return kept, next_topic_number, unassigned, retired


async def fold_messages(
    model: MemoryModel,
    chat_id: str,
    current: Sequence[Topic],
    next_topic_number: int,
    messages: Sequence[MessageIn],
) -> FoldResult:
    """Fold `messages` (oldest first) into `current` with `model`.

    Raises whatever the model raises (`TransientError`, `PermanentError`): the caller's transaction
    then rolls back and the messages stay pending."""
    rewrite = await model.rewrite_topics(chat_id, list(current), list(messages))
    topics, next_number, unassigned, retired = apply_drafts(
        current, next_topic_number, messages, rewrite.drafts
    )
    if unassigned or retired:
        logger.warning(
            "chat %s: %d message(s) folded without a topic, %d topic(s) retired by the cap",
            chat_id,
            len(unassigned),
            len(retired),
        )
    return FoldResult(
        topics=topics,
        next_topic_number=next_number,
        summarizer=model.name,
        usage=list(rewrite.usage),
        unassigned=unassigned,
        retired=retired,
    )


def message_in(
    message_id: int, user_name: str | None, user_id: str | None, role: str, content: str, sent_at: object
) -> MessageIn:
    """A stored message as the model sees it: the author is the display name, else user id, else role."""
    return MessageIn.model_validate(
        {
            "id": message_id,
            "author": user_name or user_id or role,
            "role": role,
            "content": content,
            "sent_at": sent_at,
        }
    )
