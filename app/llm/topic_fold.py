"""Topic rewriting by an LLM: prompt rendering under the token budget, answer validation, and the fold.

A backlog too large for one call is folded in order: chunk 1 into the current topics, chunk 2 into
that result, and so on; every message lands in exactly one chunk, none is dropped. A topic proposed
in an earlier chunk is shown to later chunks under a provisional reference (`new-1`, ...) that only
lives inside this rewrite: the final drafts carry `existing_id=None` for it, so ids stay ours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.llm.answers import AnswerProblems, NewRef, describe_pydantic_errors, load_json_answer
from app.llm.base import MessageIn, Topic, TopicDraft
from app.llm.errors import LlmInputTooLarge
from app.llm.templates import TOPICS_INPUT, TOPICS_SYSTEM, render
from app.llm.tokens import Budget, estimate_tokens, truncate_to_tokens

CONTINUATION = (
    "PART: these are new messages {first}-{last} of {total} in this update. Messages before them are "
    "already folded into the current topics; the rest follow in a later request."
)
CONTINUATION_WORST = CONTINUATION.format(first=10**6, last=10**6, total=10**6)


@dataclass
class TopicState:
    """One topic while a rewrite is in progress; `ref` is the id the model sees."""

    ref: str
    existing_id: str | None
    title: str
    summary: str
    key_points: list[str]
    participants: list[str]
    message_count: int
    last_message_at: datetime | None
    message_ids: list[int] = field(default_factory=list)  # new messages placed here by this rewrite

    @classmethod
    def from_topic(cls, topic: Topic) -> TopicState:
        return cls(
            ref=topic.id,
            existing_id=topic.id,
            title=topic.title,
            summary=topic.summary,
            key_points=list(topic.key_points),
            participants=list(topic.participants),
            message_count=topic.message_count,
            last_message_at=topic.last_message_at,
        )

    def draft(self) -> TopicDraft:
        return TopicDraft(
            existing_id=self.existing_id,
            title=self.title,
            summary=self.summary,
            key_points=self.key_points,
            participants=self.participants,
            message_ids=self.message_ids,
        )


class TopicAnswer(BaseModel):
    """The JSON we ask for: {"topics": [TopicDraft, ...]}."""

    topics: list[TopicDraft]


def render_topic(state: TopicState) -> str:
    line = {
        "id": state.ref,
        "title": state.title,
        "summary": state.summary,
        "key_points": state.key_points,
        "participants": state.participants,
        "messages": state.message_count,
        "last_message_at": state.last_message_at.strftime("%Y-%m-%d %H:%M")
        if state.last_message_at
        else None,
    }
    return json.dumps(line, ensure_ascii=False)


def render_message(message: MessageIn, max_tokens: int) -> str:
    """One JSON line: id, UTC time, author, role and the text (cut with a marker beyond `max_tokens`)."""
    line = {
        "id": message.id,
        "time": message.sent_at.strftime("%Y-%m-%d %H:%M"),
        "author": message.author,
        "role": message.role,
        "text": truncate_to_tokens(message.content, max_tokens),
    }
    return json.dumps(line, ensure_ascii=False)


@dataclass
class TopicChunk:
    """One request: the rendered prompt and the messages it carries."""

    system: str
    user: str
    messages: list[MessageIn]


def plan_chunk(
    chat_id: str, states: list[TopicState], pending: list[MessageIn], done: int, total: int, budget: Budget
) -> TopicChunk:
    """The next request: the current topics plus as many of `pending` (oldest first) as fit the budget."""
    system = render(TOPICS_SYSTEM)
    topics_block = "\n".join(render_topic(state) for state in states) or "(none yet)"
    skeleton = render(TOPICS_INPUT, chat_id=chat_id, topics=topics_block, messages="", continuation="")
    fixed = estimate_tokens(system) + estimate_tokens(skeleton) + estimate_tokens(CONTINUATION_WORST) + 2
    room = budget.request_tokens - fixed
    if room < budget.message_tokens:
        raise LlmInputTooLarge(
            f"chat {chat_id}: the instructions and {len(states)} current topics take ~{fixed} tokens, "
            f"leaving no room for messages within LLM_MAX_INPUT_TOKENS={budget.max_input_tokens}; raise it"
        )
    lines: list[str] = []
    taken: list[MessageIn] = []
    used = 0
    for message in pending:
        line = render_message(message, budget.message_tokens)
        cost = estimate_tokens(line) + 1  # the newline
        if taken and used + cost > room:
            break
        lines.append(line)
        taken.append(message)
        used += cost
    continuation = ""
    if len(taken) < total:
        continuation = CONTINUATION.format(first=done + 1, last=done + len(taken), total=total)
    user = render(
        TOPICS_INPUT,
        chat_id=chat_id,
        topics=topics_block,
        messages="\n".join(lines),
        continuation=continuation,
    )
    return TopicChunk(system=system, user=user, messages=taken)


def validate_topic_answer(raw: str, shown_refs: list[str], message_ids: list[int]) -> list[TopicDraft]:
    """The drafts of a valid answer; `AnswerProblems` lists everything wrong with an invalid one."""
    data = load_json_answer(raw)
    if isinstance(data, list):  # a bare list of topics is unambiguous: accept it
        data = {"topics": data}
    try:
        drafts = TopicAnswer.model_validate(data).topics
    except PydanticValidationError as exc:
        raise AnswerProblems(describe_pydantic_errors(exc)) from None
    problems = _reference_problems(drafts, shown_refs) + _placement_problems(drafts, message_ids)
    if problems:
        raise AnswerProblems(problems)
    return drafts


def _reference_problems(drafts: list[TopicDraft], shown_refs: list[str]) -> list[str]:
    """Each draft names a topic we showed, at most once, or none (a new topic)."""
    problems: list[str] = []
    allowed = "allowed: " + ", ".join(shown_refs) if shown_refs else "there are none, use null"
    seen: set[str] = set()
    for index, draft in enumerate(drafts):
        where = f"topics[{index}]"
        if not draft.title.strip():
            problems.append(f"{where}.title is empty")
        if draft.existing_id is None:
            continue
        if draft.existing_id not in shown_refs:
            problems.append(f"{where}.existing_id {draft.existing_id!r} is not a current topic ({allowed})")
        elif draft.existing_id in seen:
            problems.append(f"{where}.existing_id {draft.existing_id!r} is used by two topics")
        seen.add(draft.existing_id)
    return problems


def _placement_problems(drafts: list[TopicDraft], message_ids: list[int]) -> list[str]:
    """Every new message is placed in exactly one draft, and no other id is."""
    problems: list[str] = []
    wanted = set(message_ids)
    placed: dict[int, int] = {}
    for index, draft in enumerate(drafts):
        for message_id in draft.message_ids:
            if message_id not in wanted:
                problems.append(f"topics[{index}].message_ids has {message_id}, which is not a new message")
            elif message_id in placed:
                first = placed[message_id]
                problems.append(f"message {message_id} is placed in both topics[{first}] and topics[{index}]")
            else:
                placed[message_id] = index
    missing = [message_id for message_id in message_ids if message_id not in placed]
    if missing:
        problems.append(f"messages {', '.join(map(str, missing))} are not placed in any topic")
    return problems


def fold_drafts(
    states: list[TopicState], drafts: list[TopicDraft], messages: list[MessageIn], new_ref: NewRef
) -> list[TopicState]:
    """The topics after a validated answer; current topics the answer left out are kept unchanged."""
    by_ref = {state.ref: state for state in states}
    by_id = {message.id: message for message in messages}
    result: list[TopicState] = []
    for draft in drafts:
        placed = [by_id[message_id] for message_id in draft.message_ids]
        if draft.existing_id is not None:
            state = by_ref.pop(draft.existing_id)
        else:
            state = TopicState(new_ref(), None, "", "", [], [], message_count=0, last_message_at=None)
        state.title = draft.title.strip()
        state.summary = draft.summary.strip()
        state.key_points = [point for point in draft.key_points if point.strip()]
        state.participants = list(dict.fromkeys(draft.participants))
        state.message_ids.extend(draft.message_ids)
        state.message_count += len(placed)
        if placed:
            latest = max(message.sent_at for message in placed)
            state.last_message_at = max(latest, state.last_message_at) if state.last_message_at else latest
        result.append(state)
    result.extend(by_ref.values())
    return result
