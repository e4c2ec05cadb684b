"""The offline consensus distiller on English and Chinese topic memories."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.evolve.consensus import apply_changes
from app.llm.base import ConsensusItem, ConsensusUpdate, Topic, TopicSource
from app.llm.offline_consensus import classify, distil_consensus_offline

T0 = datetime(2026, 3, 10, tzinfo=UTC)


def source(chat_id: str, version_id: int, *topics: tuple[str, list[str], str]) -> TopicSource:
    return TopicSource(
        chat_id=chat_id,
        version_id=version_id,
        topics=[
            Topic(
                id=topic_id,
                title=topic_id,
                summary=summary,
                key_points=points,
                first_message_at=T0,
                last_message_at=T0,
                message_count=1,
            )
            for topic_id, points, summary in topics
        ],
    )


async def distil(
    previous: list[ConsensusItem], *sources: TopicSource
) -> tuple[ConsensusUpdate, list[ConsensusItem]]:
    """The offline answer and the consensus it leads to (through the same validation as the service)."""
    update = await distil_consensus_offline("g", previous, list(sources))
    refs = {f"{s.chat_id}/{t.id}" for s in sources for t in s.topics}
    return update, apply_changes(previous, update.changes, len(previous) + 1, refs).items


@pytest.mark.parametrize(
    ("statement", "kind"),
    [
        ("We decided to use Postgres", "decision"),
        ("We will ship on Friday", "decision"),
        ("The team agreed on weekly demos", "decision"),
        ("Alice prefers tabs over spaces", "preference"),
        ("Bob likes dark mode", "preference"),
        ("Deploys must go through CI", "norm"),
        ("Never push to main directly", "norm"),
        ("Which cloud should we host on?", "open_question"),
        ("Release date TBD", "open_question"),
        ("The API has 12 endpoints", "fact"),
        ("我们决定使用PostgreSQL", "decision"),
        ("大家同意每周开一次例会", "decision"),
        ("小王喜欢深色主题", "preference"),
        ("团队偏好异步沟通", "preference"),
        ("代码必须经过评审", "norm"),
        ("公司规定周五不上线", "norm"),
        ("上线时间待定", "open_question"),
        ("用哪个云服务商？", "open_question"),
        ("项目有三个模块", "fact"),
    ],
)
def test_classify_by_cue_words(statement: str, kind: str) -> None:
    assert classify(statement) == kind


async def test_new_items_from_english_key_points_and_cued_summary_sentences() -> None:
    update, items = await distil(
        [],
        source(
            "chat-a",
            1,
            (
                "t1",
                [
                    "We will use Postgres for storage",
                    "The API has 12 endpoints",
                    "Which cloud should we host on?",
                ],
                "A long discussion about the stack. We agreed to ship on Friday. Bob said hello.",
            ),
        ),
    )
    assert [(item.kind, item.statement) for item in items] == [
        ("decision", "We will use Postgres for storage"),
        ("fact", "The API has 12 endpoints"),
        ("open_question", "Which cloud should we host on?"),
        ("decision", "We agreed to ship on Friday."),  # a summary sentence with a cue; narration is left out
    ]
    assert all(item.support == ["chat-a/t1"] for item in items)
    assert all(
        change.action == "add" and "chat chat-a, topic t1" in change.reason for change in update.changes
    )


async def test_newer_statement_supersedes_answers_retracts_and_keeps_the_rest_in_english() -> None:
    previous = [
        ConsensusItem(
            id="c1", kind="decision", statement="We will use Postgres for storage", support=["a/t1"]
        ),
        ConsensusItem(
            id="c2", kind="open_question", statement="Which cloud should we host on?", support=["a/t1"]
        ),
        ConsensusItem(id="c3", kind="decision", statement="We agreed to ship on Friday", support=["a/t1"]),
        ConsensusItem(id="c4", kind="preference", statement="Alice prefers tabs", support=["b/t1"]),
    ]
    update, items = await distil(
        previous,
        source(
            "a",
            2,
            ("t2", ["We will use MySQL for storage", "We decided to host on the AWS cloud"], ""),
            ("t3", ["We no longer ship on Friday"], ""),
        ),
    )
    by_id = {change.item_id: change for change in update.changes if change.item_id}
    assert by_id["c1"].action == "update" and by_id["c1"].statement == "We will use MySQL for storage"
    assert by_id["c1"].reason == "superseded by a newer statement in chat a, topic t2"
    assert (by_id["c2"].action, by_id["c2"].kind) == ("update", "decision")  # the question was answered
    assert by_id["c3"].action == "retire" and "retracted in chat a, topic t3" in by_id["c3"].reason
    assert by_id["c4"].action == "keep"  # not mentioned: long-term memory is kept
    assert [item.id for item in items] == ["c1", "c2", "c4"]
    assert items[0].support == ["a/t1", "a/t2"]


async def test_chinese_topics_add_supersede_and_retract() -> None:
    _, first = await distil(
        [],
        source(
            "群聊",
            1,
            (
                "t1",
                [
                    "我们决定使用PostgreSQL作为主数据库",
                    "大家都喜欢用深色主题",
                    "上线时间待定",
                    "代码必须经过评审",
                ],
                "",
            ),
        ),
    )
    assert [item.kind for item in first] == ["decision", "preference", "open_question", "norm"]

    update, second = await distil(
        first,
        source("群聊", 2, ("t2", ["我们决定改用MySQL作为主数据库", "不再使用深色主题"], "")),
    )
    actions = {change.item_id: change.action for change in update.changes}
    assert actions == {"c1": "update", "c2": "retire", "c3": "keep", "c4": "keep"}
    assert [item.statement for item in second] == [
        "我们决定改用MySQL作为主数据库",
        "上线时间待定",
        "代码必须经过评审",
    ]


async def test_restating_an_item_keeps_it_and_adds_support() -> None:
    previous = [
        ConsensusItem(id="c1", kind="norm", statement="Deploys must go through CI.", support=["a/t1"])
    ]
    update, items = await distil(previous, source("b", 5, ("t9", ["deploys must go through  CI"], "")))
    assert [change.action for change in update.changes] == ["keep"]
    assert items == [previous[0].model_copy(update={"support": ["a/t1", "b/t9"]})]


async def test_same_input_gives_the_same_answer() -> None:
    sources = [
        source("b", 2, ("t1", ["Bob likes dark mode", "Never push to main directly"], "")),
        source("a", 1, ("t1", ["We decided to use Postgres"], "Is staging ready? We will demo on Monday.")),
    ]
    first = await distil_consensus_offline("g", [], sources)
    second = await distil_consensus_offline("g", [], list(reversed(sources)))
    assert first == second
    assert first.changes[0].statement == "We decided to use Postgres"  # the older source comes first


async def test_unrelated_statements_of_the_same_kind_do_not_replace_each_other() -> None:
    previous = [ConsensusItem(id="c1", kind="decision", statement="We decided to use Postgres", support=[])]
    update, items = await distil(previous, source("a", 3, ("t1", ["We decided to meet on Mondays"], "")))
    assert [change.action for change in update.changes] == ["keep", "add"]
    assert len(items) == 2


async def test_empty_topics_change_nothing() -> None:
    previous = [ConsensusItem(id="c1", kind="fact", statement="The API has 12 endpoints", support=[])]
    update, items = await distil(previous, source("a", 3, ("t1", [], "hello. ok.")))
    assert [change.action for change in update.changes] == ["keep"]
    assert items == previous
