"""Apply a model's consensus changes to the previous items: validate references, assign ids, diff.

Pure logic, no I/O. The rules (the model proposes, we decide):
- `keep`, `update` and `retire` must name an item we showed; an unknown or missing id, or a second
  change to an item already changed, rejects *that change* (listed with its reason in `rejected`);
  the rest of the answer is still applied. One bad reference should not discard a whole
  distillation, and a rejected change can never lose memory: the item simply stays as it was.
- Items the model does not mention are kept unchanged (an omission is not a retirement).
- `add` needs a kind and a non-empty statement; an add that restates a current item (same kind,
  same normalised text) is rejected as a duplicate. New ids are ours: `c<next_item_number>`.
- Support references the model invents (not a topic we showed, nor one an item already rested on)
  are dropped and noted in `rejected`.
- An `update` that changes neither kind nor statement is a keep (its support is merged).

The diff lists what changed, item by item: `added`, `updated` (with the previous kind and
statement) and `retired`, each with the model's reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.llm.base import ConsensusChange, ConsensusItem

ITEM_ID_PREFIX = "c"
MAX_STATEMENT_CHARS = 1000  # longer statements are cut, so one answer cannot bloat the row
MAX_REASON_CHARS = 500
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class AppliedChanges:
    items: list[ConsensusItem]  # the consensus after the changes, previous order first, then adds
    diff: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    next_item_number: int

    @property
    def counts(self) -> dict[str, int]:
        ops = [entry["op"] for entry in self.diff]
        return {op: ops.count(op) for op in ("added", "updated", "retired")}


def normalise_statement(text: str) -> str:
    """Case- and space-insensitive form used to spot restatements."""
    return _SPACES.sub(" ", text).strip().rstrip(".。!！").casefold()


def item_id(number: int) -> str:
    return f"{ITEM_ID_PREFIX}{number}"


def _clean(text: str | None, limit: int) -> str:
    return _SPACES.sub(" ", text or "").strip()[:limit]


class _Applier:
    """Working state of one application; `apply_changes` is the public entry point."""

    def __init__(self, previous: list[ConsensusItem], next_item_number: int, known_refs: set[str]) -> None:
        self.items: dict[str, ConsensusItem] = {item.id: item.model_copy(deep=True) for item in previous}
        self.order = [item.id for item in previous]
        self.known_refs = known_refs | {ref for item in previous for ref in item.support}
        self.touched: set[str] = set()
        self.retired: set[str] = set()
        self.diff: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.next_number = next_item_number

    def reject(self, index: int, change: ConsensusChange, reason: str) -> None:
        self.rejected.append(
            {"change": index, "action": change.action, "item_id": change.item_id, "reason": reason}
        )

    def support(self, index: int, change: ConsensusChange) -> list[str]:
        refs = list(dict.fromkeys(change.support))
        unknown = [ref for ref in refs if ref not in self.known_refs]
        if unknown:
            self.reject(index, change, f"dropped unknown support references {unknown}")
        return [ref for ref in refs if ref in self.known_refs]

    def target(self, index: int, change: ConsensusChange) -> ConsensusItem | None:
        """The existing item a keep/update/retire names, or None after recording why not."""
        if change.item_id is None:
            self.reject(index, change, f"{change.action} needs the id of an item we showed")
            return None
        if change.item_id not in self.items:
            self.reject(index, change, f"unknown item id {change.item_id!r}: not in the consensus we showed")
            return None
        if change.item_id in self.touched:
            self.reject(index, change, f"item {change.item_id} was already changed by an earlier change")
            return None
        self.touched.add(change.item_id)
        return self.items[change.item_id]

    def apply(self, index: int, change: ConsensusChange) -> None:
        reason = _clean(change.reason, MAX_REASON_CHARS)
        if change.action == "add":
            self.add(index, change, reason)
            return
        item = self.target(index, change)
        if item is None:
            return
        support = self.support(index, change)
        if change.action == "retire":
            self.retired.add(item.id)
            self.diff.append(
                {
                    "op": "retired",
                    "item_id": item.id,
                    "kind": item.kind,
                    "statement": item.statement,
                    "reason": reason or "retired by the model",
                }
            )
            return
        merged = list(dict.fromkeys([*item.support, *support]))
        statement = _clean(change.statement, MAX_STATEMENT_CHARS) or item.statement
        kind = change.kind or item.kind
        if change.action == "update" and (statement != item.statement or kind != item.kind):
            self.diff.append(
                {
                    "op": "updated",
                    "item_id": item.id,
                    "kind": kind,
                    "statement": statement,
                    "support": merged,
                    "before": {"kind": item.kind, "statement": item.statement},
                    "reason": reason or "updated by the model",
                }
            )
            item.kind, item.statement = kind, statement
        item.support = merged

    def add(self, index: int, change: ConsensusChange, reason: str) -> None:
        statement = _clean(change.statement, MAX_STATEMENT_CHARS)
        if change.kind is None or not statement:
            self.reject(index, change, "add needs a kind and a non-empty statement")
            return
        normal = normalise_statement(statement)
        for other in self.current():
            if other.kind == change.kind and normalise_statement(other.statement) == normal:
                self.reject(index, change, f"duplicates item {other.id}")
                return
        new = ConsensusItem(
            id=item_id(self.next_number),
            kind=change.kind,
            statement=statement,
            support=self.support(index, change),
        )
        self.next_number += 1
        self.items[new.id] = new
        self.order.append(new.id)
        self.touched.add(new.id)
        self.diff.append(
            {
                "op": "added",
                "item_id": new.id,
                "kind": new.kind,
                "statement": new.statement,
                "support": new.support,
                "reason": reason or "added by the model",
            }
        )

    def current(self) -> list[ConsensusItem]:
        return [self.items[item_id] for item_id in self.order if item_id not in self.retired]


def apply_changes(
    previous: list[ConsensusItem],
    changes: list[ConsensusChange],
    next_item_number: int,
    known_refs: set[str],
) -> AppliedChanges:
    """The consensus after `changes`; `known_refs` are the topic refs (chat_id/topic_id) we showed."""
    applier = _Applier(previous, next_item_number, known_refs)
    for index, change in enumerate(changes):
        applier.apply(index, change)
    return AppliedChanges(
        items=applier.current(),
        diff=applier.diff,
        rejected=applier.rejected,
        next_item_number=applier.next_number,
    )
