"""Offline topic summarizer: deterministic, no network, useful on English and Chinese chats.

How it folds new messages into a chat's topics:
- **keywords**: Latin text gives lower-cased words (stop words dropped, a light plural strip);
  CJK text gives character bigrams (bigrams with a function character such as 的/了/是 dropped),
  since Chinese has no spaces and bigrams are the usual dictionary-free approximation of words;
- **assignment**: each message joins the topic whose keywords cover the largest share of its own
  (existing topics first, so topics stay stable), a short reply with no match follows the previous
  message's topic, and anything else starts a new topic; at `MAX_TOPICS` it joins the closest one;
- **text**: an existing topic keeps its title; a new one is titled by its top keywords; summary and
  key points are the most salient statements (highest keyword weight, a bonus for decision words
  such as "decided"/"决定"), kept in chat order; participants are the authors.

Existing topics that receive no message are not returned: the service keeps them as they were.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from app.llm.base import MessageIn, Topic, TopicDraft, TopicRewrite

MAX_TOPICS = 8  # topics per chat this summarizer creates at most
SUMMARY_STATEMENTS = 2
KEY_POINTS = 5
STATEMENT_MAX_CHARS = 200
SUMMARY_MAX_CHARS = 600
TITLE_KEYWORDS = 3
PARTICIPANTS_MAX = 20
MIN_SHARE = 0.2  # share of a message's keywords a topic must know for the message to join it
SHORT_REPLY_KEYWORDS = 2  # a reply this short with no match follows the previous message's topic

_LATIN_WORD = re.compile(r"[a-z0-9]+(?:['_-][a-z0-9]+)*", re.IGNORECASE)
_LOWER_WORD = re.compile(r"[a-z]+")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STATEMENT_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|\n+")
TITLE_MERGE_MAX_CHARS = 4  # CJK bigrams chained into one title word at most this long

_EN_STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing done don down during each else even
    few for from further get got had has have having he her here hers herself him himself his how
    i if in into is it its itself just let lets like ll me more most much my myself no nor not now
    of off ok okay on once one only or other our ours ourselves out over own re really same she
    should so some such than that thats the their theirs them themselves then there these they
    this those through to too under until up us ve very was we were what when where which while
    who whom why will with would yeah yes you your yours yourself yourselves hi hello thanks thank
    please sure well think know want going go maybe still lot something anything""".split()
)
_CJK_STOP_CHARS = frozenset(
    "的了是在我你他她它们这那哪个和与及或也都就还又很太把被让给对从向于而但却吗吧呢啊呀哦嗯么之其此"
)
_CJK_STOP_BIGRAMS = frozenset(
    """一下 一个 一些 没有 不是 有没 可以 觉得 应该 已经 现在 大家 知道 时候 然后 还是 但是 因为
    所以 如果 就是 这样 那样 真的 非常 比较 其实 感觉 什么 怎么 今天 明天 昨天 好的 谢谢 不要 不会""".split()
)
_DECISION_WORDS = frozenset(
    """decide decided decision agree agreed will must need needs plan planned deadline should
    confirm confirmed conclusion todo action""".split()
)
_DECISION_CJK = ("决定", "同意", "需要", "必须", "计划", "截止", "确认", "结论", "安排", "负责")


@lru_cache(maxsize=65536)  # chats repeat their words: most lookups are hits
def _latin_key(word: str) -> str | None:
    word = word.lower().removesuffix("'s")
    if len(word) < 2 or word.isdigit() or word in _EN_STOP:
        return None
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    return word


def keywords(text: str) -> list[str]:
    """The keywords of `text` in order of appearance (repeats kept, for weighting)."""
    return list(_keywords(text))


@lru_cache(maxsize=4096)  # one rewrite looks at each statement several times; bounded memory
def _keywords(text: str) -> tuple[str, ...]:
    if not _CJK_RUN.search(text):  # Latin only: already in order of appearance
        return tuple(key for word in _LATIN_WORD.findall(text) if (key := _latin_key(word)) is not None)
    found: list[tuple[int, str]] = []
    for match in _LATIN_WORD.finditer(text):
        key = _latin_key(match.group())
        if key is not None:
            found.append((match.start(), key))
    for match in _CJK_RUN.finditer(text):
        run = match.group()
        for offset in range(len(run) - 1):
            bigram = run[offset : offset + 2]
            if not (_CJK_STOP_CHARS & set(bigram)) and bigram not in _CJK_STOP_BIGRAMS:
                found.append((match.start() + offset, bigram))
    found.sort()
    return tuple(key for _, key in found)


def statements(text: str) -> list[str]:
    """Split text into statements (sentences, lines); drops empty pieces."""
    return [piece.strip() for piece in _STATEMENT_END.split(text) if piece and piece.strip()]


@dataclass
class _Cluster:
    """A topic being built: an existing one (`topic` set) or a new one."""

    topic: Topic | None
    weights: Counter[str] = field(default_factory=Counter)
    messages: list[MessageIn] = field(default_factory=list)
    last_touch: int = -1  # index of the last message that joined, for tie-breaks

    @property
    def size(self) -> int:
        return len(self.messages) + (self.topic.message_count if self.topic else 0)


def _cluster_for(topic: Topic) -> _Cluster:
    weights: Counter[str] = Counter()
    for key in keywords(topic.title):
        weights[key] += 2  # the title says what the topic is about
    for text in [topic.summary, *topic.key_points]:
        weights.update(keywords(text))
    return _Cluster(topic=topic, weights=weights)


def _share(message_keys: set[str], cluster: _Cluster) -> float:
    known = sum(1 for key in message_keys if cluster.weights[key] > 0)
    return known / len(message_keys) if message_keys else 0.0


def _choose(clusters: list[_Cluster], keys: set[str], previous: _Cluster | None) -> _Cluster | None:
    """The cluster the message joins, or None for a new topic."""
    scored = [(_share(keys, c), c.last_touch, -index, c) for index, c in enumerate(clusters)]
    best = max(scored, key=lambda item: item[:3], default=None)
    if best is not None and best[0] >= MIN_SHARE:
        return best[3]
    if previous is not None and len(keys) <= SHORT_REPLY_KEYWORDS:
        return previous
    if len(clusters) >= MAX_TOPICS:  # at the cap: join the closest, else the smallest
        if best is not None and best[0] > 0:
            return best[3]
        return min(clusters, key=lambda c: (c.size, -c.last_touch))
    return None


def _assign(current: list[Topic], messages: list[MessageIn]) -> list[_Cluster]:
    clusters = [_cluster_for(topic) for topic in current]
    previous: _Cluster | None = None
    for index, message in enumerate(messages):
        keys = set(keywords(message.content))
        chosen = _choose(clusters, keys, previous)
        if chosen is None:
            chosen = _Cluster(topic=None)
            clusters.append(chosen)
        chosen.messages.append(message)
        chosen.weights.update(keywords(message.content))
        chosen.last_touch = index
        previous = chosen
    return [cluster for cluster in clusters if cluster.messages]


def _salience(text: str, weights: Counter[str]) -> float:
    keys = keywords(text)
    if len(keys) < 2:
        return 0.0
    score = sum(weights[key] for key in set(keys)) / math.sqrt(len(keys))
    lowered = text.lower()
    if any(word in _DECISION_WORDS for word in _LOWER_WORD.findall(lowered)) or any(
        cue in text for cue in _DECISION_CJK
    ):
        score *= 1.5
    return score


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _pick(candidates: list[str], weights: Counter[str], count: int) -> list[str]:
    """The `count` most salient distinct candidates, in their original order."""
    unique = list(dict.fromkeys(c for c in candidates if c))
    scores = [_salience(candidate, weights) for candidate in unique]
    ranked = sorted(range(len(unique)), key=lambda i: (-scores[i], i))
    chosen = sorted(i for i in ranked[:count] if scores[i] > 0)
    if not chosen and unique:  # nothing scored (very short chat): keep the latest statement
        chosen = [len(unique) - 1]
    return [unique[i] for i in chosen]


def _title(cluster: _Cluster) -> str:
    text = "\n".join(m.content for m in cluster.messages)
    first_seen: dict[str, int] = {}
    # no keyword spans a line break, so the text's keywords are its messages' (cached) ones
    message_keys = [key for m in cluster.messages for key in _keywords(m.content)]
    for position, key in enumerate(message_keys):
        first_seen.setdefault(key, position)
    ranked = sorted(first_seen, key=lambda k: (-cluster.weights[k], first_seen[k]))
    parts: list[str] = []
    for key in ranked[: TITLE_KEYWORDS * 3]:
        chain = next((p for p in parts if p[-1] == key[0] and p + key[1:] in text), None)
        if chain is not None and _CJK_RUN.fullmatch(key):  # 服务 + 务器 -> 服务器; else a stray bigram
            if len(chain) < TITLE_MERGE_MAX_CHARS:
                parts[parts.index(chain)] = chain + key[1:]
        elif len(parts) < TITLE_KEYWORDS:
            parts.append(key)
    if not parts:
        return _clip(cluster.messages[0].content.strip() or "Conversation", 60)
    title = " · ".join(parts)
    return title[0].upper() + title[1:]


def _draft(cluster: _Cluster) -> TopicDraft:
    old = cluster.topic
    new_statements = [s for m in cluster.messages for s in statements(m.content)]
    old_summary = statements(old.summary) if old else []
    summary_parts = _pick(old_summary + new_statements, cluster.weights, SUMMARY_STATEMENTS)
    summary = _clip(" ".join(_clip(s, STATEMENT_MAX_CHARS) for s in summary_parts), SUMMARY_MAX_CHARS)
    old_points = old.key_points if old else []
    points = [
        _clip(s, STATEMENT_MAX_CHARS) for s in _pick(old_points + new_statements, cluster.weights, KEY_POINTS)
    ]
    authors = list(dict.fromkeys([*(old.participants if old else []), *(m.author for m in cluster.messages)]))
    return TopicDraft(
        existing_id=old.id if old else None,
        title=old.title if old else _title(cluster),
        summary=summary,
        key_points=points,
        participants=authors[:PARTICIPANTS_MAX],
        message_ids=[m.id for m in cluster.messages],
    )


async def rewrite_topics_offline(
    chat_id: str, current: list[Topic], messages: list[MessageIn]
) -> TopicRewrite:
    """Fold `messages` (oldest first) into `current`; every message lands in exactly one draft."""
    return TopicRewrite(drafts=[_draft(cluster) for cluster in _assign(current, messages)])
