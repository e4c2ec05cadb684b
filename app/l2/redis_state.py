"""The Redis side of L2: pending counts, the due-by-time index and the one-queued-update marker.

Redis only schedules; Postgres is the truth (a message is pending while its `topic_version_id` is
NULL), so everything here can be rebuilt by `reconcile` after a flush. Keys (`app.constants`):

    L2_PENDING_COUNTS  hash  chat -> pending messages (a hint; reset exactly by each update)
    L2_PENDING_SEQ     hash  chat -> bumped by every recording, so an update can tell whether new
                             messages arrived while it ran (and not confuse -10 +10 with "nothing")
    L2_DUE_AT          zset  chat -> unix seconds when the chat is due: now when its count reached
                             the threshold or it was never updated, else last update + force period
    L2_LAST_UPDATE     hash  chat -> unix seconds of its last committed update
    L2_QUEUED_PREFIX   string per chat: the arq job id of its queued update
    L2_QUEUED_CHATS    zset  chat -> enqueue ms of that update: the index an update job takes
                             other chats' not-yet-started updates from (`take_queued`); entries of
                             started or vanished jobs are dropped lazily

Each operation is ONE Lua script call. "A queued update exists" means: the marker names a job whose
arq job key exists and that is not in progress, so a started, finished, failed or killed job never
blocks the next trigger, and no TTL has to be guessed. Claiming the marker and enqueueing the arq job
happen in the same script (arq's own key layout: `arq:job:<id>` + the queue sorted set, the payload
built by `arq.jobs.serialize_job` with our msgpack serializer), so a marker never points at a job
that was not enqueued. Dynamic keys make these scripts single-node Redis only, as arq itself is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from arq.constants import expires_extra_ms, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from app.config import Settings
from app.constants import (
    JOB_UPDATE_TOPIC_MEMORY,
    L2_DUE_AT,
    L2_LAST_UPDATE,
    L2_PENDING_COUNTS,
    L2_PENDING_SEQ,
    L2_QUEUED_CHATS,
    L2_QUEUED_PREFIX,
)
from app.serialization import serialize

_PRELUDE = """
local queued_prefix, job_prefix, progress_prefix = ARGV[1], ARGV[2], ARGV[3]
local now_ms = tonumber(ARGV[4])
local expires_ms = tonumber(ARGV[5])
local threshold = tonumber(ARGV[6])
local force = tonumber(ARGV[7])
local enqueue_ms = tonumber(ARGV[8])
local now = string.format('%.3f', now_ms / 1000)
local counts, seq, due, last, queue, queued_chats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local function claim(chat, job_id, payload)
  local marker = queued_prefix .. chat
  local held = redis.call('GET', marker)
  if held and redis.call('EXISTS', job_prefix .. held) == 1
      and redis.call('EXISTS', progress_prefix .. held) == 0 then
    return false
  end
  redis.call('SET', marker, job_id, 'PX', expires_ms)
  redis.call('SET', job_prefix .. job_id, payload, 'PX', expires_ms)
  redis.call('ZADD', queue, enqueue_ms, job_id)
  redis.call('ZADD', queued_chats, enqueue_ms, chat)
  return true
end

local function due_by_time(chat)
  local updated = redis.call('HGET', last, chat)
  if updated then return string.format('%.3f', tonumber(updated) + force) end
  return now
end
"""
_HEADER_ARGS = 8  # ARGV[1..8]; script arguments follow

_RECORDED = (
    _PRELUDE
    + """
local enqueued = {}
for i = 9, #ARGV, 4 do
  local chat = ARGV[i]
  local n = redis.call('HINCRBY', counts, chat, ARGV[i + 1])
  redis.call('HINCRBY', seq, chat, 1)
  if n >= threshold then
    redis.call('ZADD', due, 'LT', now, chat)
    if claim(chat, ARGV[i + 2], ARGV[i + 3]) then table.insert(enqueued, ARGV[i + 2]) end
  else
    redis.call('ZADD', due, 'NX', due_by_time(chat), chat)
  end
end
return enqueued
"""
)

_TRIGGER = (
    _PRELUDE
    + """
local enqueued = {}
for i = 9, #ARGV, 3 do
  if claim(ARGV[i], ARGV[i + 1], ARGV[i + 2]) then table.insert(enqueued, ARGV[i + 1]) end
end
return enqueued
"""
)

_UPDATED = (
    _PRELUDE
    + """
local follow_ups = {}
for i = 9, #ARGV, 8 do
  local chat, seq_before, own_job = ARGV[i], ARGV[i + 1], ARGV[i + 4]
  local folded, remaining = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local backlog = ARGV[i + 5] == '1'
  local changed = (redis.call('HGET', seq, chat) or '') ~= seq_before
  if own_job ~= '' and redis.call('GET', queued_prefix .. chat) == own_job then
    redis.call('DEL', queued_prefix .. chat)
    redis.call('ZREM', queued_chats, chat)
  end
  if folded > 0 then redis.call('HSET', last, chat, now) end
  local n = remaining
  if changed then
    local current = tonumber(redis.call('HGET', counts, chat) or '0')
    if folded > 0 then current = redis.call('HINCRBY', counts, chat, -folded) end
    n = math.max(current, remaining)
  end
  if n > 0 then redis.call('HSET', counts, chat, n) else redis.call('HDEL', counts, chat) end
  local follow_up = ''
  if n <= 0 and not changed then
    redis.call('ZREM', due, chat)
  elseif n >= threshold or (backlog and n > 0) then
    redis.call('ZADD', due, now, chat)
    if claim(chat, ARGV[i + 6], ARGV[i + 7]) then follow_up = ARGV[i + 6] end
  else
    redis.call('ZADD', due, due_by_time(chat), chat)
  end
  table.insert(follow_ups, follow_up)
end
return follow_ups
"""
)

# Take up to ARGV[9] other chats' queued updates that have not started (never the chat ARGV[10]):
# each is removed from arq's queue and its job key deleted, and its in-progress key is written, so a
# worker that already read it from the queue drops it (arq WATCHes that key before starting a job).
# A job that ran before (arq's retry key exists) or is deferred (score in the future) is left alone:
# its retries and backoff stay arq's (one that ran before also leaves the index: it never qualifies).
# Returns [chat, seq, chat, seq, ...], each seq read at the same instant; ARGV[10]'s comes first.
_TAKE = (
    _PRELUDE
    + """
local limit, own, retry_prefix = tonumber(ARGV[9]), ARGV[10], ARGV[11]
local taken = {own, redis.call('HGET', seq, own) or ''}
if limit <= 0 then return taken end
local candidates = redis.call('ZRANGEBYSCORE', queued_chats, '-inf', enqueue_ms, 'LIMIT', 0, limit * 4)
local count = 0
for _, chat in ipairs(candidates) do
  if count >= limit then break end
  if chat ~= own then
    local job = redis.call('GET', queued_prefix .. chat)
    local score = job and redis.call('ZSCORE', queue, job)
    if not job or redis.call('EXISTS', job_prefix .. job) == 0
        or redis.call('EXISTS', progress_prefix .. job) == 1
        or redis.call('EXISTS', retry_prefix .. job) == 1 then
      redis.call('ZREM', queued_chats, chat)  -- gone, running, or ran before: never ours to take
    elseif score and tonumber(score) <= enqueue_ms then
      redis.call('ZREM', queue, job)
      redis.call('DEL', job_prefix .. job, queued_prefix .. chat)
      redis.call('SET', progress_prefix .. job, 'taken', 'PX', 60000)  -- outlives any WATCH...EXEC
      redis.call('ZREM', queued_chats, chat)
      table.insert(taken, chat)
      table.insert(taken, redis.call('HGET', seq, chat) or '')
      count = count + 1
    end
  end
end
return taken
"""
)


@dataclass(frozen=True, slots=True)
class UpdateDone:
    """What one chat's update did, for `after_updates`."""

    chat_id: str
    seq_before: str  # the chat's recording sequence read before the update looked at Postgres
    folded: int
    remaining: int
    own_job_id: str | None  # the job that was queued for this chat, whose marker is released
    backlog: bool = False  # stopped at L2_QUEUE_MAX_LEN with messages left: follow up now, whatever the count


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def new_job_id() -> str:
    return uuid.uuid4().hex


def update_job_payload(chat_id: str, enqueue_time_ms: int) -> bytes:
    """The arq job `task_update_topic_memory(chat_id)`, serialized exactly as `enqueue_job` would."""
    return serialize_job(JOB_UPDATE_TOPIC_MEMORY, (chat_id,), {}, None, enqueue_time_ms, serializer=serialize)


class L2RedisState:
    """The L2 scheduling state in one Redis database (cheap to build: scripts are hashed once each)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._recorded = redis.register_script(_RECORDED)
        self._trigger = redis.register_script(_TRIGGER)
        self._updated = redis.register_script(_UPDATED)
        self._take = redis.register_script(_TAKE)

    def _keys(self) -> list[str]:
        return [
            L2_PENDING_COUNTS,
            L2_PENDING_SEQ,
            L2_DUE_AT,
            L2_LAST_UPDATE,
            self.settings.arq_queue_name,
            L2_QUEUED_CHATS,
        ]

    def _header(self, now_ms: int, enqueue_ms: int) -> list[str | int | bytes]:
        """`now_ms`: the scheduling clock (injectable in jobs); `enqueue_ms`: real time, which arq
        compares job scores with."""
        return [
            L2_QUEUED_PREFIX,
            job_key_prefix,
            in_progress_key_prefix,
            now_ms,
            expires_extra_ms,
            self.settings.l2_queue_trigger_threshold,
            self.settings.l2_force_update_after_minutes * 60,
            enqueue_ms,
        ]

    async def on_recorded(self, new_per_chat: Mapping[str, int]) -> list[str]:
        """Count newly recorded messages; returns the ids of the update jobs this enqueued
        (a chat whose count reached the threshold and has no queued update gets one)."""
        now_ms = _ms(time.time())
        args = self._header(now_ms, now_ms)
        for chat_id, increment in new_per_chat.items():
            args += [chat_id, increment, new_job_id(), update_job_payload(chat_id, now_ms)]
        return [_text(j) or "" for j in await self._recorded(keys=self._keys(), args=args)]

    async def trigger(self, chat_ids: Iterable[str]) -> list[str]:
        """Enqueue an update for each chat that has no queued one; returns the new job ids."""
        now_ms = _ms(time.time())
        args = self._header(now_ms, now_ms)
        for chat_id in chat_ids:
            args += [chat_id, new_job_id(), update_job_payload(chat_id, now_ms)]
        if len(args) == _HEADER_ARGS:
            return []
        return [_text(j) or "" for j in await self._trigger(keys=self._keys(), args=args)]

    async def read_seq(self, chat_id: str) -> str:
        """The chat's recording sequence now ('' when absent): read before an update looks at Postgres."""
        value: bytes | str | None = await self.redis.hget(L2_PENDING_SEQ, chat_id)  # type: ignore[misc]
        return _text(value) or ""

    async def take_queued(self, chat_id: str, limit: int) -> list[tuple[str, str]]:
        """Start an update of `chat_id` that also takes up to `limit` other chats whose queued
        updates have not started yet (oldest first; their arq jobs are removed, so this update owns
        them). Returns [(chat, seq before), ...], `chat_id` first; one script call.

        Whoever takes a chat must publish it with `after_updates` or hand it back with `trigger`;
        if it dies instead, the chat stays due and the scan cron enqueues it again."""
        now_ms = _ms(time.time())
        args = self._header(now_ms, now_ms) + [limit, chat_id, retry_key_prefix]
        flat = [_text(v) or "" for v in await self._take(keys=self._keys(), args=args)]
        return list(zip(flat[::2], flat[1::2], strict=True))

    async def after_update(
        self,
        chat_id: str,
        *,
        seq_before: str,
        folded: int,
        remaining: int,
        now: datetime,
        own_job_id: str | None,
    ) -> str | None:
        """`after_updates` for one chat; returns its follow-up's job id."""
        done = UpdateDone(chat_id, seq_before, folded, remaining, own_job_id)
        return (await self.after_updates([done], now))[chat_id]

    async def after_updates(self, updates: Sequence[UpdateDone], now: datetime) -> dict[str, str | None]:
        """Publish committed updates (or no-ops), one script call: reset each chat's count, due time
        and last update, release its marker, and enqueue a follow-up when its count is still at the
        threshold or it has a backlog (the update stopped at L2_QUEUE_MAX_LEN); returns chat ->
        follow-up job id (None without one).

        If no message was recorded since `seq_before` was read, the count is set to exactly
        `remaining` (which also repairs any drift); otherwise the folded messages are subtracted."""
        if not updates:
            return {}
        enqueue_ms = _ms(time.time())
        args = self._header(_ms(now.timestamp()), enqueue_ms)
        for done in updates:
            args += [
                done.chat_id,
                done.seq_before,
                done.folded,
                done.remaining,
                done.own_job_id or "",
                "1" if done.backlog else "0",
                new_job_id(),
                update_job_payload(done.chat_id, enqueue_ms),
            ]
        follow_ups = await self._updated(keys=self._keys(), args=args)
        return {done.chat_id: (_text(job) or None) for done, job in zip(updates, follow_ups, strict=True)}

    async def due_chats(self, now: datetime, offset: int, limit: int) -> list[str]:
        """Chats due at `now`, earliest first: one range query on the due index."""
        chats = await self.redis.zrangebyscore(L2_DUE_AT, "-inf", now.timestamp(), start=offset, num=limit)
        return [_text(c) or "" for c in chats]

    async def restore(
        self,
        pending: Sequence[tuple[str, int, datetime | None]],
        last_updates: Sequence[tuple[str, datetime]],
        now: datetime,
    ) -> None:
        """Write state rebuilt from Postgres: counts and due times of pending chats, last updates."""
        threshold = self.settings.l2_queue_trigger_threshold
        force = self.settings.l2_force_update_after_minutes * 60
        async with self.redis.pipeline(transaction=False) as pipe:
            for chat_id, count, updated_at in pending:
                pipe.hset(L2_PENDING_COUNTS, chat_id, str(count))
                due = (
                    now.timestamp()
                    if count >= threshold or updated_at is None
                    else updated_at.timestamp() + force
                )
                pipe.zadd(L2_DUE_AT, {chat_id: _ms(due) / 1000})  # ms floor, as the scripts
            for chat_id, updated_at in last_updates:
                pipe.hset(L2_LAST_UPDATE, chat_id, f"{_ms(updated_at.timestamp()) / 1000:.3f}")
            await pipe.execute()

    async def pending_count(self, chat_id: str) -> int:
        """The chat's pending count as Redis sees it (0 when absent)."""
        return int(_text(await self.redis.hget(L2_PENDING_COUNTS, chat_id)) or 0)  # type: ignore[misc]
