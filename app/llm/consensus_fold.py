"""Consensus distillation by an LLM: prompt rendering under the budget, answer validation, the fold.

The sources (every changed topic of the group's chats) are shown in order; when they do not fit one
call they are folded chunk by chunk into the items, as topics are. An item added in an earlier chunk
is shown to later ones under a provisional reference (`new-1`, ...); the final changes carry
`item_id=None` for it, so ids stay ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.llm.answers import AnswerProblems, NewRef, describe_pydantic_errors, load_json_answer
from app.llm.base import ConsensusChange, ConsensusItem, ConsensusKind, Topic, TopicSource
from app.llm.errors import LlmInputTooLarge
from app.llm.templates import CONSENSUS_INPUT, CONSENSUS_SYSTEM, render
from app.llm.tokens import Budget, estimate_tokens, truncate_to_tokens

CONTINUATION = (
    "PART: these are topics {first}-{last} of {total} in this distillation. Topics before them are "
    "already reflected in the current items; the rest follow in a later request."
)
CONTINUATION_WORST = CONTINUATION.format(first=10**6, last=10**6, total=10**6)


@dataclass
class ItemState:
    """One consensus item while a distillation is in progress; `ref` is the id the model sees."""

    ref: str
    existing_id: str | None
    kind: ConsensusKind
    statement: str
    support: list[str]
    action: str = "keep"  # keep, update, add, retire: the net change against the previous consensus
    reason: str = ""

    def change(self) -> ConsensusChange:
        if self.action == "keep":
            return ConsensusChange(action="keep", item_id=self.existing_id)
        if self.action == "retire":
            return ConsensusChange(action="retire", item_id=self.existing_id, reason=self.reason)
        return ConsensusChange(
            action="update" if self.existing_id is not None else "add",
            item_id=self.existing_id,
            kind=self.kind,
            statement=self.statement,
            support=self.support,
            reason=self.reason,
        )


@dataclass
class SourceTopic:
    """One topic of one chat, the unit of chunking."""

    chat_id: str
    topic: Topic

    @property
    def ref(self) -> str:
        return f"{self.chat_id}/{self.topic.id}"


@dataclass
class ConsensusChunk:
    system: str
    user: str
    refs: list[str] = field(default_factory=list)  # the topic references this request shows


class ConsensusAnswer(BaseModel):
    """The JSON we ask for: {"changes": [ConsensusChange, ...]}."""

    changes: list[ConsensusChange]


def flatten_sources(sources: list[TopicSource]) -> list[SourceTopic]:
    return [SourceTopic(source.chat_id, topic) for source in sources for topic in source.topics]


def render_item(state: ItemState) -> str:
    line = {"id": state.ref, "kind": state.kind, "statement": state.statement, "support": state.support}
    return json.dumps(line, ensure_ascii=False)


def render_source(source: SourceTopic, max_tokens: int) -> str:
    """One JSON line per topic; the summary is cut with a marker so the line stays near `max_tokens`."""
    topic = source.topic
    line = {
        "ref": source.ref,
        "title": topic.title,
        "summary": truncate_to_tokens(topic.summary, max_tokens // 2),
        "key_points": [truncate_to_tokens(point, max_tokens // 16) for point in topic.key_points[:8]],
        "participants": topic.participants[:20],
        "last_message_at": topic.last_message_at.strftime("%Y-%m-%d %H:%M"),
    }
    return json.dumps(line, ensure_ascii=False)


def plan_chunk(
    group_id: str, states: list[ItemState], pending: list[SourceTopic], done: int, total: int, budget: Budget
) -> ConsensusChunk:
    """The next request: the live items plus as many of `pending` topics as fit the budget."""
    system = render(CONSENSUS_SYSTEM)
    items_block = "\n".join(render_item(state) for state in states) or "(none yet)"
    skeleton = render(CONSENSUS_INPUT, group_id=group_id, items=items_block, topics="", continuation="")
    fixed = estimate_tokens(system) + estimate_tokens(skeleton) + estimate_tokens(CONTINUATION_WORST) + 2
    room = budget.request_tokens - fixed
    if room < budget.message_tokens:
        raise LlmInputTooLarge(
            f"group {group_id}: the instructions and {len(states)} current items take ~{fixed} tokens, "
            f"leaving no room for topics within LLM_MAX_INPUT_TOKENS={budget.max_input_tokens}; raise it"
        )
    lines: list[str] = []
    refs: list[str] = []
    used = 0
    for source in pending:
        line = render_source(source, budget.message_tokens)
        cost = estimate_tokens(line) + 1
        if refs and used + cost > room:
            break
        lines.append(line)
        refs.append(source.ref)
        used += cost
    continuation = ""
    if len(refs) < total:
        continuation = CONTINUATION.format(first=done + 1, last=done + len(refs), total=total)
    user = render(
        CONSENSUS_INPUT,
        group_id=group_id,
        items=items_block,
        topics="\n".join(lines),
        continuation=continuation,
    )
    return ConsensusChunk(system=system, user=user, refs=refs)


def validate_consensus_answer(
    raw: str, states: list[ItemState], topic_refs: list[str]
) -> list[ConsensusChange]:
    """The changes of a valid answer; `AnswerProblems` lists everything wrong with an invalid one."""
    data = load_json_answer(raw)
    if isinstance(data, list):
        data = {"changes": data}
    try:
        changes = ConsensusAnswer.model_validate(data).changes
    except PydanticValidationError as exc:
        raise AnswerProblems(describe_pydantic_errors(exc)) from None
    by_ref = {state.ref: state for state in states}
    problems: list[str] = []
    seen: set[str] = set()
    for index, change in enumerate(changes):
        where = f"changes[{index}]"
        problems.extend(_change_problems(where, change, by_ref, seen))
        known_support = set(topic_refs)
        if change.item_id in by_ref:
            known_support.update(by_ref[change.item_id].support)
        unknown = [ref for ref in change.support if ref not in known_support]
        if unknown:
            problems.append(f"{where}.support has unknown topic references: {', '.join(unknown)}")
    if problems:
        raise AnswerProblems(problems)
    return changes


def _change_problems(
    where: str, change: ConsensusChange, by_ref: dict[str, ItemState], seen: set[str]
) -> list[str]:
    if change.action == "add":
        problems = [] if change.item_id is None else [f"{where}: an added item must have item_id null"]
        if change.kind is None:
            problems.append(f"{where}: an added item needs a kind")
        if not (change.statement or "").strip():
            problems.append(f"{where}: an added item needs a statement")
        return problems
    if change.item_id is None:
        return [f"{where}: {change.action} needs the item_id of a current item"]
    if change.item_id not in by_ref:
        allowed = ", ".join(by_ref) or "there are none"
        return [f"{where}.item_id {change.item_id!r} is not a current item (allowed: {allowed})"]
    if change.item_id in seen:
        return [f"{where}: item {change.item_id!r} has more than one change"]
    seen.add(change.item_id)
    if change.action == "update" and change.statement is not None and not change.statement.strip():
        return [f"{where}: an update needs a non-empty statement"]
    return []


def fold_changes(states: list[ItemState], changes: list[ConsensusChange], new_ref: NewRef) -> list[ItemState]:
    """The live items after a validated answer (retired ones move to `retired`, see `final_changes`)."""
    by_ref = {state.ref: state for state in states}
    for change in changes:
        if change.action == "add":
            assert change.kind is not None and change.statement is not None  # validated above
            states.append(
                ItemState(
                    ref=new_ref(),
                    existing_id=None,
                    kind=change.kind,
                    statement=change.statement.strip(),
                    support=list(dict.fromkeys(change.support)),
                    action="add",
                    reason=change.reason,
                )
            )
            continue
        assert change.item_id is not None
        state = by_ref[change.item_id]
        if change.action == "retire":
            state.action = "retire"
            state.reason = change.reason
        elif change.action == "update":
            state.kind = change.kind or state.kind
            state.statement = (change.statement or state.statement).strip()
            state.support = list(dict.fromkeys(change.support or state.support))
            state.reason = change.reason
            if state.action == "keep":
                state.action = "update"
    return states


def live(states: list[ItemState]) -> list[ItemState]:
    """Items the next chunk should see: everything not retired."""
    return [state for state in states if state.action != "retire"]


def final_changes(states: list[ItemState]) -> list[ConsensusChange]:
    """Net changes against the previous consensus; an item added then retired in this run vanishes."""
    return [
        state.change() for state in states if not (state.existing_id is None and state.action == "retire")
    ]


def initial_states(previous: list[ConsensusItem]) -> list[ItemState]:
    return [
        ItemState(
            ref=item.id, existing_id=item.id, kind=item.kind, statement=item.statement, support=item.support
        )
        for item in previous
    ]
