"""Offline consensus distiller: deterministic cue-word rules, no network, English and Chinese.

From each changed chat's topics it takes *statements*: every key point, plus the summary sentences
that carry a cue (a summary sentence without one is usually narration, not consensus). Each
statement is classified by cue words, first match wins:

    open_question  ends with "?"/"？", or "TBD", "to be decided", "open question", "待定", "未定"
    decision       "decided", "we will", "agreed", "going with", "决定", "同意", "确定"
    norm           "always", "never", "must", "not allowed", "规定", "必须", "禁止", "不得"
    preference     "prefer", "like", "love", "favourite", "喜欢", "偏好", "倾向"
    fact           anything else (key points only)

Statements are then merged into the consensus, oldest source first, so the newest word wins:
- the same statement again (case/space-insensitive) keeps the item and adds its support;
- a *retraction* ("no longer", "cancelled", "不再", "取消") on the subject of an item retires it;
- a statement on the same *subject* as an item of the same kind (or answering an open question)
  supersedes it: the item is updated in place and keeps its id. Subject = the statement's content
  words (English words, Chinese character bigrams) minus cue and stop words; "same subject" means
  a Jaccard similarity of at least 0.5 ("We will use Postgres for storage" -> "... MySQL for storage");
- anything else is added.
Items the changed topics do not mention are kept: consensus is long-term memory, and a chat's topic
memory dropping an old topic is not evidence against it, so only an explicit retraction or a
superseding statement ends an item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.llm.base import ConsensusChange, ConsensusItem, ConsensusKind, ConsensusUpdate, Topic, TopicSource

SAME_SUBJECT_MIN_SIMILARITY = 0.5  # Jaccard of subject tokens
MAX_STATEMENT_CHARS = 300
MIN_STATEMENT_CHARS = 4  # "ok", "好的" are not consensus
MAX_NEW_ITEMS_PER_RUN = 50

_QUESTION_END = ("?", "？")
_CUES: tuple[tuple[ConsensusKind, re.Pattern[str]], ...] = (
    (
        "open_question",
        re.compile(r"\btbd\b|\bto be (?:decided|determined)\b|\bopen question\b|待定|未定|待讨论"),
    ),
    (
        "decision",
        re.compile(
            r"\bdecided\b|\bdecision\b|\bwe will\b|\bwe'll\b|\bagreed\b|\bgoing with\b|\bwill use\b"
            r"|决定|同意|确定|商定|决议"
        ),
    ),
    (
        "norm",
        re.compile(
            r"\balways\b|\bnever\b|\bmust\b|\bnot allowed\b|\brequired\b|\bpolicy\b"
            r"|规定|必须|禁止|不得|务必|总是"
        ),
    ),
    (
        "preference",
        re.compile(r"\bprefers?\b|\bpreferred\b|\blikes?\b|\bloves?\b|\bfavou?rite\b|喜欢|偏好|倾向|更爱"),
    ),
)
_RETRACTION = re.compile(
    r"\bno longer\b|\bnot anymore\b|\bany ?more\b|\bcancel(?:l?ed)?\b|\babandon(?:ed)?\b|\bdropp?ed\b"
    r"|\brevert(?:ed)?\b|不再|取消|放弃|作废"
)
_ALL_CUES = re.compile("|".join([pattern.pattern for _, pattern in _CUES] + [_RETRACTION.pattern]))
_SENTENCE_END = re.compile(r"(?<=[.!?。！？；;])\s*|\n+")
_WORD = re.compile(r"[a-z0-9][a-z0-9_+#.-]*")
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_CJK_STOP = re.compile(
    r"我们|大家|你们|他们|一下|这个|那个|以后|今后|的|了|是|在|要|会|吗|呢|吧|也|都|就|和|与"
)
_STOPWORDS = frozenset(
    "a an the we us our you they it its is are was were be been to of for in on at by with and or "
    "that this these those as from will would should can could do does did not no so then than "
    "which what who when where how why let lets let's".split()
)
_SPACES = re.compile(r"\s+")


@dataclass
class _Statement:
    text: str
    kind: ConsensusKind
    ref: str  # chat_id/topic_id
    retraction: bool


@dataclass
class _Working:
    """One item during the merge: an existing one (`id`) or a new one (`id` None)."""

    id: str | None
    kind: ConsensusKind
    text: str
    support: list[str]
    original: tuple[ConsensusKind, str] | None = None
    reason: str = ""
    retired: bool = False
    subject: frozenset[str] = field(default_factory=frozenset)


def classify(statement: str) -> ConsensusKind:
    """The consensus kind of one statement by its cue words (see the module docstring)."""
    text = statement.strip().casefold()
    if text.endswith(_QUESTION_END):
        return "open_question"
    for kind, pattern in _CUES:
        if pattern.search(text):
            return kind
    return "fact"


def subject_tokens(statement: str) -> frozenset[str]:
    """Content words (English) and character bigrams (Chinese), cue and stop words removed."""
    text = _ALL_CUES.sub(" ", statement.casefold())
    words = {word.strip(".-") for word in _WORD.findall(text)} - _STOPWORDS
    grams: set[str] = set()
    for run in _CJK_RUN.findall(_CJK_STOP.sub(" ", text)):
        grams.update(run[i : i + 2] for i in range(max(len(run) - 1, 1)))
    return frozenset(word for word in words | grams if word)


def similarity(left: frozenset[str], right: frozenset[str]) -> float:
    if not left or not right:
        return 0.0
    return len(left & right) / len(left | right)


def _normal(text: str) -> str:
    return _SPACES.sub(" ", text).strip().rstrip(".。!！").casefold()


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()[:MAX_STATEMENT_CHARS]


def _statements(source: TopicSource, topic: Topic) -> list[_Statement]:
    ref = f"{source.chat_id}/{topic.id}"
    found: list[_Statement] = []
    for point in topic.key_points:
        text = _clean(point)
        if len(text) >= MIN_STATEMENT_CHARS:
            found.append(_Statement(text, classify(text), ref, bool(_RETRACTION.search(text.casefold()))))
    for sentence in _SENTENCE_END.split(topic.summary):
        text = _clean(sentence)
        if len(text) < MIN_STATEMENT_CHARS or any(_normal(text) == _normal(s.text) for s in found):
            continue
        kind, retraction = classify(text), bool(_RETRACTION.search(text.casefold()))
        if kind != "fact" or retraction:
            found.append(_Statement(text, kind, ref, retraction))
    return found


def _compatible(item: _Working, statement: _Statement) -> bool:
    return item.kind == statement.kind or item.kind == "open_question" or statement.retraction


def _best_match(items: list[_Working], statement: _Statement, subject: frozenset[str]) -> _Working | None:
    best: _Working | None = None
    best_score = SAME_SUBJECT_MIN_SIMILARITY
    for item in items:
        if item.retired or not _compatible(item, statement):
            continue
        score = similarity(item.subject, subject)
        if score >= best_score and (best is None or score > best_score):
            best, best_score = item, score
    return best


def _merge(items: list[_Working], statement: _Statement, new_count: int) -> int:
    """Fold one statement into the working items; returns how many new items exist afterwards."""
    where = f"chat {statement.ref.replace('/', ', topic ', 1)}"
    for item in items:
        if not item.retired and _normal(item.text) == _normal(statement.text):
            if statement.ref not in item.support:
                item.support.append(statement.ref)
            return new_count
    subject = subject_tokens(statement.text)
    match = _best_match(items, statement, subject)
    if match is not None and statement.retraction:
        match.retired = True
        match.reason = f"retracted in {where}: {statement.text!r}"
        return new_count
    if match is not None:
        match.kind, match.text, match.subject = statement.kind, statement.text, subject
        match.support = list(dict.fromkeys([*match.support, statement.ref]))
        match.reason = f"superseded by a newer statement in {where}"
        return new_count
    if new_count >= MAX_NEW_ITEMS_PER_RUN:
        return new_count
    kind: ConsensusKind = "decision" if statement.retraction and statement.kind == "fact" else statement.kind
    items.append(
        _Working(
            None, kind, statement.text, [statement.ref], reason=f"new {kind} from {where}", subject=subject
        )
    )
    return new_count + 1


def _change(item: _Working) -> ConsensusChange | None:
    if item.id is None:
        if item.retired:  # added and retracted within the same run: nothing to keep
            return None
        return ConsensusChange(
            action="add", kind=item.kind, statement=item.text, support=item.support, reason=item.reason
        )
    if item.retired:
        return ConsensusChange(action="retire", item_id=item.id, reason=item.reason)
    if item.original != (item.kind, item.text):
        return ConsensusChange(
            action="update",
            item_id=item.id,
            kind=item.kind,
            statement=item.text,
            support=item.support,
            reason=item.reason,
        )
    return ConsensusChange(
        action="keep", item_id=item.id, support=item.support, reason="not contradicted by the changed topics"
    )


async def distil_consensus_offline(
    group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
) -> ConsensusUpdate:
    """Keep/update/retire `previous` and add new items from `sources`; deterministic for equal input."""
    items = [
        _Working(
            item.id,
            item.kind,
            item.statement,
            list(item.support),
            original=(item.kind, item.statement),
            subject=subject_tokens(item.statement),
        )
        for item in previous
    ]
    new_count = 0
    for source in sorted(sources, key=lambda s: (s.version_id, s.chat_id)):
        for topic in sorted(source.topics, key=lambda t: (t.last_message_at, t.id)):
            for statement in _statements(source, topic):
                new_count = _merge(items, statement, new_count)
    changes = [change for item in items if (change := _change(item)) is not None]
    return ConsensusUpdate(changes=changes)
