"""The OpenAI-compatible provider distilling group consensus against the local chat-completions server."""

from __future__ import annotations

from typing import Any

import pytest

from app.llm.base import ConsensusItem, TopicSource
from app.llm.errors import LlmAnswerInvalid
from app.llm.openai_provider import OpenAICompatibleModel
from app.llm.tokens import estimate_tokens
from tests.integration.llm.conftest import make_topic, openai_settings
from tests.support.fake_openai import FakeOpenAI, RecordedRequest, Reply, reply_json

PREVIOUS = [
    ConsensusItem(id="c1", kind="decision", statement="Releases ship on Friday.", support=["chat-a/t1"]),
    ConsensusItem(id="c2", kind="norm", statement="Every deploy needs a review.", support=["chat-a/t1"]),
    ConsensusItem(id="c3", kind="fact", statement="Staging runs on one node.", support=["chat-b/t1"]),
]
SOURCES = [
    TopicSource(
        chat_id="chat-a", version_id=11, topics=[make_topic("t1"), make_topic("t2", "Deploy failure")]
    ),
    TopicSource(chat_id="chat-b", version_id=12, topics=[make_topic("t1", "Staging capacity")]),
]


async def distil(server: FakeOpenAI, **overrides: Any) -> Any:
    model = OpenAICompatibleModel(openai_settings(server, **overrides))
    try:
        return await model.distil_consensus("group-1", PREVIOUS, SOURCES)
    finally:
        await model.aclose()


async def test_changes_are_validated_and_returned_with_usage(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        reply_json(
            {
                "changes": [
                    {"action": "keep", "item_id": "c1"},
                    {
                        "action": "update",
                        "item_id": "c2",
                        "statement": "Every deploy needs two reviews.",
                        "support": ["chat-a/t1", "chat-a/t2"],
                        "reason": "tightened after the failure",
                    },
                    {
                        "action": "add",
                        "item_id": None,
                        "kind": "fact",
                        "statement": "Staging runs on two nodes.",
                        "support": ["chat-b/t1"],
                    },
                    {"action": "retire", "item_id": "c3", "reason": "staging grew"},
                ]
            },
            prompt_tokens=2000,
            completion_tokens=100,
        )
    )
    update = await distil(fake_openai)

    by_action = {(c.action, c.item_id): c for c in update.changes}
    assert set(by_action) == {("keep", "c1"), ("update", "c2"), ("add", None), ("retire", "c3")}
    assert by_action["update", "c2"].statement == "Every deploy needs two reviews."
    assert by_action["update", "c2"].support == ["chat-a/t1", "chat-a/t2"]
    assert by_action["add", None].kind == "fact"
    assert by_action["retire", "c3"].reason == "staging grew"
    [usage] = update.usage
    assert (usage.prompt_tokens, usage.completion_tokens, str(usage.cost_usd)) == (2000, 100, "1.150000")

    [request] = fake_openai.requests
    refs = [line["ref"] for line in request.json_lines() if "ref" in line]
    assert refs == ["chat-a/t1", "chat-a/t2", "chat-b/t1"]
    items = [line["id"] for line in request.json_lines() if "statement" in line]
    assert items == ["c1", "c2", "c3"]
    assert "never invent one" in " ".join(request.system.split())


async def test_items_the_answer_does_not_mention_are_kept(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_json({"changes": [{"action": "retire", "item_id": "c3", "reason": "obsolete"}]}))
    update = await distil(fake_openai)
    assert [(c.action, c.item_id) for c in update.changes] == [
        ("keep", "c1"),
        ("keep", "c2"),
        ("retire", "c3"),
    ]


async def test_unknown_items_and_support_are_repaired_then_fail_with_the_raw_answer(
    fake_openai: FakeOpenAI,
) -> None:
    bad = {
        "changes": [
            {"action": "update", "item_id": "c9", "statement": "x"},
            {"action": "add", "kind": "fact", "statement": "y", "support": ["chat-z/t7"]},
            {"action": "add", "item_id": "c4", "kind": "fact", "statement": "z"},
        ]
    }
    fake_openai.script(reply_json(bad), reply_json(bad))
    with pytest.raises(LlmAnswerInvalid) as caught:
        await distil(fake_openai)
    repair = fake_openai.requests[1].last
    assert "changes[0].item_id 'c9' is not a current item (allowed: c1, c2, c3)" in repair
    assert "changes[1].support has unknown topic references: chat-z/t7" in repair
    assert "changes[2]: an added item must have item_id null" in repair
    assert '"c9"' in caught.value.raw_answer
    assert len(caught.value.usage) == 2


def add_or_extend(request: RecordedRequest) -> Reply:
    """Adds one item in the first call, then updates that item (shown as new-1) in every later call."""
    lines = request.json_lines()
    refs = [line["ref"] for line in lines if "ref" in line]
    items = {line["id"]: line for line in lines if "statement" in line}
    if "new-1" not in items:
        change: dict[str, Any] = {
            "action": "add",
            "kind": "fact",
            "statement": "seen 1 part",
            "support": refs[:1],
        }
    else:
        parts = int(items["new-1"]["statement"].split()[1]) + 1
        support = [*items["new-1"]["support"], refs[0]]
        change = {
            "action": "update",
            "item_id": "new-1",
            "statement": f"seen {parts} parts",
            "support": support,
        }
    return reply_json({"changes": [change]})


async def test_many_topics_are_distilled_over_several_calls_without_invented_ids(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.responder = add_or_extend
    many = [
        TopicSource(
            chat_id=f"chat-{n}",
            version_id=n,
            topics=[make_topic(f"t{k}", f"Topic {k} of chat {n} about the release train") for k in range(3)],
        )
        for n in range(10)
    ]
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_max_input_tokens=1500))
    try:
        update = await model.distil_consensus("group-1", [], many)
    finally:
        await model.aclose()

    requests = fake_openai.requests
    assert len(requests) >= 3
    shown = [line["ref"] for request in requests for line in request.json_lines() if "ref" in line]
    assert shown == [f"chat-{n}/t{k}" for n in range(10) for k in range(3)]  # every topic, once, in order
    for request in requests:
        assert estimate_tokens(request.system) + estimate_tokens(request.user) <= 1500 * 3 // 4
    [change] = update.changes
    assert (change.action, change.item_id) == ("add", None)  # "new-1" never leaves the provider
    assert change.statement == f"seen {len(requests)} parts"
    assert change.support[0] == "chat-0/t0" and len(change.support) == len(requests)
