"""`distil_group` against real Postgres: outcomes, versions with diffs, cursors, accounting,
idempotence, serialisation per group, the chat bound and the daily ledger."""

from __future__ import annotations

import asyncio
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.evolve.models import GroupChatCursor, GroupDistillationDay, GroupMemory
from app.evolve.service import (
    OUTCOME_ALREADY_TODAY,
    OUTCOME_DISTILLED,
    OUTCOME_NOTHING,
    OUTCOME_UNCHANGED,
    distil_group,
)
from app.llm.base import ConsensusChange
from app.llm.models import LlmCall
from app.llm.offline import OfflineMemoryModel
from tests.support.evolve import (
    T0,
    RecordingModel,
    ScriptedModel,
    add_topic_version,
    count_rows,
    make_topic,
    versions_of,
)

DAY = date(2026, 3, 10)


async def test_group_without_topic_memory_has_nothing_to_distil_and_leaves_no_row(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    model = RecordingModel()
    result = await distil_group(session_factory, model, "group-empty", T0, "job-1")
    assert (result.outcome, result.version) == (OUTCOME_NOTHING, 0)
    assert model.calls == []
    assert await count_rows(session_factory) == {
        "memories": 0,
        "versions": 0,
        "cursors": 0,
        "days": 0,
        "usage": 0,
    }


async def test_first_distillation_writes_version_diff_cursors_and_usage_then_a_rerun_is_a_no_op(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    v1 = await add_topic_version(
        session_factory,
        "g1",
        "chat-a",
        [make_topic("t1", ["We will use Postgres for storage", "Bob likes tea"])],
    )
    v2 = await add_topic_version(
        session_factory, "g1", "chat-b", [make_topic("t1", ["Deploys must go through CI"])]
    )
    await add_topic_version(
        session_factory, "other-group", "chat-z", [make_topic("t1", ["Unrelated fact here"])]
    )

    result = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, "job-1")

    assert result.outcome == OUTCOME_DISTILLED
    assert (result.version, result.added, result.updated, result.retired) == (1, 3, 0, 0)
    assert result.topic_version_ids == [v1.id, v2.id]
    [version] = await versions_of(session_factory, "g1")
    assert [item["id"] for item in version.items] == ["c1", "c2", "c3"]
    assert [(entry["op"], entry["item_id"], entry["kind"]) for entry in version.diff] == [
        ("added", "c1", "decision"),
        ("added", "c2", "preference"),
        ("added", "c3", "norm"),
    ]
    assert (version.producer, version.trigger, version.day, version.job_id) == (
        "offline",
        "manual",
        None,
        "job-1",
    )
    async with session_factory() as session:
        memory = await session.get(GroupMemory, "g1")
        assert memory is not None and (memory.version, memory.next_item_number) == (1, 4)
        cursors = (await session.scalars(select(GroupChatCursor).order_by(GroupChatCursor.chat_id))).all()
        assert [(c.chat_id, c.topic_version, c.topic_version_id) for c in cursors] == [
            ("chat-a", 1, v1.id),
            ("chat-b", 1, v2.id),
        ]
        usage = (await session.scalars(select(LlmCall))).all()
        assert [(u.purpose, u.subject_kind, u.subject_id, u.job_id) for u in usage] == [
            ("consensus", "group", "g1", "job-1")
        ]

    before = await count_rows(session_factory)
    again = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, "job-2")
    assert (again.outcome, again.version) == (OUTCOME_UNCHANGED, 1)
    assert await count_rows(session_factory) == before


async def test_only_the_latest_version_of_each_changed_chat_is_read(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We will use Postgres for storage"])]
    )
    await add_topic_version(session_factory, "g1", "chat-b", [make_topic("t1", ["Bob likes tea"])])
    await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, None)

    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We will use Redis for storage"])]
    )
    latest = await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We will use MySQL for storage"])]
    )
    model = RecordingModel()
    result = await distil_group(session_factory, model, "g1", T0, None)

    [(_, previous, sources)] = model.calls
    assert [item.id for item in previous] == ["c1", "c2"]
    assert [(s.chat_id, s.version_id) for s in sources] == [("chat-a", latest.id)]  # chat-b unchanged
    assert result.topic_version_ids == [latest.id]
    history = await versions_of(session_factory, "g1")
    assert history[-1].diff == [
        {
            "op": "updated",
            "item_id": "c1",
            "kind": "decision",
            "statement": "We will use MySQL for storage",
            "support": ["chat-a/t1"],
            "before": {"kind": "decision", "statement": "We will use Postgres for storage"},
            "reason": "superseded by a newer statement in chat chat-a, topic t1",
        }
    ]


async def test_model_references_are_validated_and_ids_are_ours(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(session_factory, "g1", "chat-a", [make_topic("t1", ["Bob likes tea"])])
    model = ScriptedModel(
        changes=[
            ConsensusChange(action="retire", item_id="c42", reason="hallucinated"),
            ConsensusChange(
                action="add", item_id="c42", kind="fact", statement="Tea is served", support=["chat-a/t1"]
            ),
        ]
    )
    result = await distil_group(session_factory, model, "g1", T0, None)

    assert (result.outcome, result.added, result.rejected) == (OUTCOME_DISTILLED, 1, 1)
    [version] = await versions_of(session_factory, "g1")
    assert version.items == [
        {"id": "c1", "kind": "fact", "statement": "Tea is served", "support": ["chat-a/t1"]}
    ]
    assert version.rejected == [
        {
            "change": 0,
            "action": "retire",
            "item_id": "c42",
            "reason": "unknown item id 'c42': not in the consensus we showed",
        }
    ]
    assert version.producer == "scripted"


async def test_concurrent_runs_for_one_group_produce_one_version(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We decided to use Postgres"])]
    )
    model = RecordingModel()
    results = await asyncio.gather(
        *(distil_group(session_factory, model, "g1", T0, f"job-{n}") for n in range(4))
    )
    assert sorted(r.outcome for r in results) == [OUTCOME_DISTILLED] + [OUTCOME_UNCHANGED] * 3
    assert len(model.calls) == 1  # the others waited on the row lock, then found nothing new
    assert len(await versions_of(session_factory, "g1")) == 1


async def test_changed_chats_beyond_the_bound_wait_for_the_next_run(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    for n in range(5):
        await add_topic_version(
            session_factory, "g1", f"chat-{n}", [make_topic("t1", [f"Fact number {n} holds"])]
        )
    first = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, None, max_chats=3)
    second = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, None, max_chats=3)
    third = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, None, max_chats=3)
    assert (len(first.topic_version_ids), first.pending_chats) == (3, 2)
    assert (len(second.topic_version_ids), second.pending_chats) == (2, 0)
    assert third.outcome == OUTCOME_UNCHANGED
    assert not set(first.topic_version_ids) & set(second.topic_version_ids)


async def test_daily_run_claims_the_day_once_and_a_manual_run_is_not_limited_by_it(
    settings: Settings, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We decided to use Postgres for storage"])]
    )
    daily = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, "daily-1", day=DAY)
    assert (daily.outcome, daily.trigger, daily.day) == (OUTCOME_DISTILLED, "daily", DAY)

    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We decided to use MySQL for storage"])]
    )
    model = RecordingModel()
    again = await distil_group(session_factory, model, "g1", T0, "daily-2", day=DAY)
    assert (again.outcome, again.version) == (OUTCOME_ALREADY_TODAY, 1)
    assert model.calls == []  # refused before asking the model

    manual = await distil_group(session_factory, OfflineMemoryModel(), "g1", T0, "manual-1")
    assert (manual.outcome, manual.version, manual.updated) == (OUTCOME_DISTILLED, 2, 1)
    async with session_factory() as session:
        days = (await session.scalars(select(GroupDistillationDay))).all()
        assert [(d.group_id, d.day, d.version, d.job_id) for d in days] == [("g1", DAY, 1, "daily-1")]
    history = await versions_of(session_factory, "g1")
    assert [(v.trigger, v.day) for v in history] == [("daily", DAY), ("manual", None)]
