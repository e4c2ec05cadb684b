"""Applying model drafts: topic ids are ours, references are checked, nothing is silently lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.constants import L2_MAX_TOPICS
from app.l2.folding import apply_drafts
from app.llm.base import MessageIn, Topic, TopicDraft

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _message(i: int) -> MessageIn:
    return MessageIn(
        id=i, author=f"u{i}", role="user", content=f"text {i}", sent_at=T0 + timedelta(minutes=i)
    )


def _topic(topic_id: str, count: int = 2, minutes: int = 0) -> Topic:
    return Topic(
        id=topic_id,
        title=f"topic {topic_id}",
        summary="s",
        first_message_at=T0,
        last_message_at=T0 + timedelta(minutes=minutes),
        message_count=count,
    )


def test_new_topics_get_our_ids_and_a_foreign_existing_id_is_never_used_as_a_key() -> None:
    current = [_topic("t1")]
    drafts = [
        TopicDraft(existing_id="other-chat/t9", title="hijack", summary="", message_ids=[1]),
        TopicDraft(existing_id=None, title="fresh", summary="", message_ids=[2]),
    ]
    topics, next_number, unassigned, _ = apply_drafts(current, 4, [_message(1), _message(2)], drafts)
    assert [t.id for t in topics] == ["t1", "t4", "t5"]
    assert topics[0] == current[0]  # untouched
    assert (topics[1].title, topics[1].message_count) == ("hijack", 1)
    assert next_number == 6 and unassigned == []


def test_message_ids_outside_the_batch_or_claimed_twice_do_not_count() -> None:
    drafts = [
        TopicDraft(existing_id="t1", title="a", summary="", message_ids=[1, 1, 999]),
        TopicDraft(title="b", summary="", message_ids=[1]),  # only a message already claimed: dropped
    ]
    topics, next_number, unassigned, _ = apply_drafts([_topic("t1")], 2, [_message(1), _message(2)], drafts)
    assert [(t.id, t.message_count) for t in topics] == [("t1", 3)]
    assert topics[0].last_message_at == _message(1).sent_at
    assert unassigned == [2] and next_number == 2


def test_texts_are_trimmed_and_empty_titles_replaced() -> None:
    drafts = [TopicDraft(title="  ", summary="x" * 5000, key_points=["", "k"] * 8, message_ids=[1])]
    (topic,), _, _, _ = apply_drafts([], 1, [_message(1)], drafts)
    assert topic.title == "Untitled topic"
    assert len(topic.summary) == 4000 and topic.key_points == ["k"] * 8


def test_past_the_cap_the_least_recently_active_topics_are_retired() -> None:
    current = [_topic(f"t{i}", minutes=i) for i in range(1, L2_MAX_TOPICS + 1)]
    drafts = [TopicDraft(title="newest", summary="", message_ids=[100])]
    topics, _, _, retired = apply_drafts(current, L2_MAX_TOPICS + 1, [_message(100)], drafts)
    assert len(topics) == L2_MAX_TOPICS
    assert retired == ["t1"]
    assert topics[-1].id == f"t{L2_MAX_TOPICS + 1}"
