"""Applying a model's consensus changes: our ids, validated references, and the item-level diff."""

from __future__ import annotations

from app.evolve.consensus import apply_changes
from app.llm.base import ConsensusChange, ConsensusItem

PREVIOUS = [
    ConsensusItem(id="c1", kind="decision", statement="We will use Postgres", support=["chat-a/t1"]),
    ConsensusItem(id="c2", kind="preference", statement="Alice prefers tabs", support=["chat-a/t2"]),
    ConsensusItem(id="c3", kind="open_question", statement="Which cloud?", support=["chat-b/t1"]),
]
KNOWN = {"chat-a/t1", "chat-a/t3", "chat-b/t1"}


def test_add_update_retire_produce_a_diff_with_reasons_and_our_ids() -> None:
    changes = [
        ConsensusChange(action="keep", item_id="c2"),
        ConsensusChange(
            action="update",
            item_id="c1",
            statement="We will use MySQL",
            support=["chat-a/t3"],
            reason="switched",
        ),
        ConsensusChange(action="retire", item_id="c3", reason="answered"),
        ConsensusChange(
            action="add", kind="norm", statement="Tests must pass", support=["chat-a/t3"], reason="new rule"
        ),
    ]
    applied = apply_changes(PREVIOUS, changes, next_item_number=7, known_refs=KNOWN)

    assert [(item.id, item.statement) for item in applied.items] == [
        ("c1", "We will use MySQL"),
        ("c2", "Alice prefers tabs"),
        ("c7", "Tests must pass"),
    ]
    assert applied.next_item_number == 8
    assert applied.items[0].support == ["chat-a/t1", "chat-a/t3"]
    assert applied.diff == [
        {
            "op": "updated",
            "item_id": "c1",
            "kind": "decision",
            "statement": "We will use MySQL",
            "support": ["chat-a/t1", "chat-a/t3"],
            "before": {"kind": "decision", "statement": "We will use Postgres"},
            "reason": "switched",
        },
        {
            "op": "retired",
            "item_id": "c3",
            "kind": "open_question",
            "statement": "Which cloud?",
            "reason": "answered",
        },
        {
            "op": "added",
            "item_id": "c7",
            "kind": "norm",
            "statement": "Tests must pass",
            "support": ["chat-a/t3"],
            "reason": "new rule",
        },
    ]
    assert applied.counts == {"added": 1, "updated": 1, "retired": 1}
    assert applied.rejected == []


def test_unknown_missing_and_repeated_ids_are_rejected_with_reasons_and_change_nothing() -> None:
    changes = [
        ConsensusChange(action="retire", item_id="c99", reason="made up"),
        ConsensusChange(action="update", statement="no id"),
        ConsensusChange(action="retire", item_id="c1", reason="first"),
        ConsensusChange(action="update", item_id="c1", statement="second change of c1"),
    ]
    applied = apply_changes(PREVIOUS, changes, next_item_number=4, known_refs=KNOWN)

    assert [entry["reason"] for entry in applied.rejected] == [
        "unknown item id 'c99': not in the consensus we showed",
        "update needs the id of an item we showed",
        "item c1 was already changed by an earlier change",
    ]
    assert [entry["change"] for entry in applied.rejected] == [0, 1, 3]
    assert [item.id for item in applied.items] == ["c2", "c3"]  # only the valid retire took effect
    assert [entry["op"] for entry in applied.diff] == ["retired"]


def test_model_cannot_pick_ids_for_new_items() -> None:
    change = ConsensusChange(action="add", item_id="c1", kind="fact", statement="The API has 12 endpoints")
    applied = apply_changes(PREVIOUS, [change], next_item_number=4, known_refs=KNOWN)
    assert applied.items[-1].id == "c4"
    assert applied.items[0].statement == "We will use Postgres"  # c1 untouched


def test_invalid_adds_and_invented_support_are_refused() -> None:
    changes = [
        ConsensusChange(action="add", statement="no kind"),
        ConsensusChange(action="add", kind="fact", statement="   "),
        ConsensusChange(action="add", kind="decision", statement="we will use  postgres."),  # a restatement
        ConsensusChange(action="add", kind="fact", statement="Deploys are on Monday", support=["chat-z/t9"]),
    ]
    applied = apply_changes(PREVIOUS, changes, next_item_number=4, known_refs=KNOWN)

    assert [entry["reason"] for entry in applied.rejected] == [
        "add needs a kind and a non-empty statement",
        "add needs a kind and a non-empty statement",
        "duplicates item c1",
        "dropped unknown support references ['chat-z/t9']",
    ]
    added = applied.items[-1]
    assert (added.id, added.statement, added.support) == ("c4", "Deploys are on Monday", [])


def test_unmentioned_items_are_kept_and_a_no_op_update_is_not_a_change() -> None:
    changes = [
        ConsensusChange(action="update", item_id="c2", statement="Alice prefers tabs", support=["chat-b/t1"])
    ]
    applied = apply_changes(PREVIOUS, changes, next_item_number=4, known_refs=KNOWN)

    assert [item.id for item in applied.items] == ["c1", "c2", "c3"]
    assert applied.diff == []
    assert applied.items[1].support == ["chat-a/t2", "chat-b/t1"]  # support still merged


def test_previous_items_are_not_mutated() -> None:
    apply_changes(PREVIOUS, [ConsensusChange(action="update", item_id="c1", statement="x y z")], 4, KNOWN)
    assert PREVIOUS[0].statement == "We will use Postgres"
