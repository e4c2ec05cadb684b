"""L2 services: record messages, update a chat's topic memory, read it back.

Guarantees, and where they come from:
- **durable first**: recording commits to Postgres before Redis is touched; a Redis failure after
  that loses nothing (the chat is rescheduled by the next reconcile) and is reported, not raised;
- **exactly once**: an update selects pending messages, writes a version and marks exactly those
  messages folded in ONE transaction; a crash anywhere before the commit leaves them pending;
- **one writer per chat**: that transaction holds the chat's `topic_memories` row lock
  (`SELECT ... FOR UPDATE`, bounded by `L2_LOCK_WAIT_SECONDS`); a timed-out wait is transient. Other
  chats taken into the same batch are locked with SKIP LOCKED: one held elsewhere is handed back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.context import utc_now
from app.db.engine import engine_of
from app.errors import NotFoundError, TransientError
from app.l2 import repository as repo
from app.l2.folding import FoldResult, fold_messages, message_in
from app.l2.redis_state import L2RedisState, UpdateDone
from app.l2.repository import MemoryRow
from app.l2.schemas import (
    NewMessage,
    RecordResult,
    TopicMemoryVersionView,
    TopicMemoryView,
    UpdateOutcome,
)
from app.l2.validation import validate_messages
from app.llm.accounting import insert_usage_rows, record_failed_usage, usage_rows
from app.llm.base import MemoryModel, Topic

# what the asyncpg driver raises when its connection died (the recording path bypasses SQLAlchemy)
DRIVER_DISCONNECTS = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,  # a connection the server killed while it sat idle in the pool
    OSError,
)
logger = logging.getLogger(__name__)
_RETRYABLE_SQLSTATES = {"55P03": "lock wait timed out", "40P01": "deadlock", "40001": "serialization failure"}


@dataclass
class L2Deps:
    """What the L2 services need; the worker builds it from its context, the client from itself."""

    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis
    clock: Callable[[], datetime] = utc_now  # the scheduling clock ("now" for due times)
    _state: L2RedisState | None = field(default=None, repr=False)

    @property
    def state(self) -> L2RedisState:
        if self._state is None:
            self._state = L2RedisState(self.redis, self.settings)
        return self._state


# --- recording ------------------------------------------------------------------------------------


async def record_messages(deps: L2Deps, items: Iterable[NewMessage | Mapping[str, Any]]) -> RecordResult:
    """Validate the whole batch, store it in one statement, then count it in Redis (one script call).

    A message already recorded (same chat_id and message_id) is skipped and counted as a duplicate.
    Raises `ValidationError` naming `messages[i].field` before anything is written."""
    messages = validate_messages(items, deps.settings.message_max_bytes)
    inserted = await _insert(engine_of(deps.session_factory), messages)
    new_per_chat = Counter(inserted)
    result = RecordResult(recorded=len(inserted), duplicates=len(messages) - len(inserted))
    if not new_per_chat:
        return result
    try:
        enqueued = await deps.state.on_recorded(new_per_chat)
    except RedisError as exc:  # stored already; the reconcile step schedules these chats
        logger.warning(
            "recorded %d message(s) in Postgres but Redis failed (%s: %s); "
            "chats %s are scheduled by the next reconcile",
            result.recorded,
            type(exc).__name__,
            exc,
            sorted(new_per_chat)[:10],
        )
        return RecordResult(result.recorded, result.duplicates, [], scheduled=False)
    return RecordResult(result.recorded, result.duplicates, enqueued)


async def _insert(engine: AsyncEngine, messages: list[NewMessage]) -> list[str]:
    """Insert through the driver; after a dead connection (a database restart), through SQLAlchemy,
    which recycles the pool. The insert is idempotent (ON CONFLICT DO NOTHING): retrying never
    doubles a message."""
    try:
        return await _insert_once(engine, messages, checked=False)
    except DRIVER_DISCONNECTS:
        pass
    try:
        return await _insert_once(engine, messages, checked=True)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return await _insert_once(engine, messages, checked=True)


async def _insert_once(engine: AsyncEngine, messages: list[NewMessage], *, checked: bool) -> list[str]:
    async with engine.connect() as connection:
        # one statement is atomic by itself: no transaction spares the BEGIN and COMMIT round trips
        # (the driver path never begins one; SQLAlchemy would, unless told autocommit)
        if checked:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        try:
            return await repo.insert_messages(connection, messages, checked=checked)
        except DRIVER_DISCONNECTS:
            await connection.invalidate()  # never hand this connection out again
            raise


async def request_update(deps: L2Deps, chat_id: str) -> str | None:
    """Enqueue an update of the chat unless one is queued already; returns the new job id or None."""
    jobs = await deps.state.trigger([chat_id])
    return jobs[0] if jobs else None


# --- updating -------------------------------------------------------------------------------------


async def _lock_or_create(session: AsyncSession, chat_id: str, lock_wait_seconds: float) -> MemoryRow:
    memory = await repo.lock_or_create_memory(session, chat_id, lock_wait_seconds)
    if memory is None:  # no message: only a memory row could exist (if its messages were removed)
        await repo.set_lock_timeout(session, lock_wait_seconds)
        memory = await repo.lock_memory(session, chat_id)
    if memory is None:
        raise NotFoundError(
            f"chat {chat_id!r} has no recorded messages and no topic memory: nothing to update"
        )
    return memory


@dataclass(frozen=True)
class _Folded:
    version: int
    folded: int
    remaining: int


@dataclass
class _Batch:
    """What one update transaction did."""

    folded: dict[str, _Folded] = field(default_factory=dict)  # every chat locked, no-ops included
    skipped: list[str] = field(default_factory=list)  # taken chats it could not lock: handed back
    failed: dict[str, Exception] = field(default_factory=dict)  # chats whose model call raised


async def _fold_batch(
    deps: L2Deps,
    model: MemoryModel,
    chat_id: str,
    taken: list[str],
    job_id: str | None,
    job_try: int | None,
    now: datetime,
) -> _Batch:
    """One transaction: lock the chat (waiting, bounded) and the taken chats (skipping any another
    transaction holds), read their oldest pending messages, fold each (model calls run concurrently),
    write every version + mark its messages + update its memory row (one statement), record usage,
    commit. A chat whose model call raises is left out: its messages stay pending."""
    settings = deps.settings
    batch = _Batch()
    async with deps.session_factory.begin() as session:
        own = await _lock_or_create(session, chat_id, settings.l2_lock_wait_seconds)
        memories = {m.chat_id: m for m in [own, *await repo.lock_more_memories(session, taken)]}
        batch.skipped = [chat for chat in taken if chat not in memories]
        started_at, started = utc_now(), time.monotonic()
        pending = await repo.pending_of_chats(session, list(memories), settings.l2_queue_max_len)
        for chat, memory in memories.items():
            if chat not in pending:
                batch.folded[chat] = _Folded(memory.version, 0, 0)

        async def fold(chat: str) -> FoldResult:
            memory, (rows, _) = memories[chat], pending[chat]
            current = [Topic.model_validate(topic) for topic in memory.topics]
            messages = [message_in(r.id, r.user_name, r.user_id, r.role, r.content, r.sent_at) for r in rows]
            return await fold_messages(model, chat, current, memory.next_topic_number, messages)

        chats = list(pending)
        results = await asyncio.gather(*(fold(chat) for chat in chats), return_exceptions=True)
        duration_ms = int((time.monotonic() - started) * 1000)
        writes: list[repo.VersionWrite] = []
        usage: list[dict[str, Any]] = []
        for chat, result in zip(chats, results, strict=True):
            if isinstance(result, Exception):
                batch.failed[chat] = result
                continue
            if isinstance(result, BaseException):  # cancelled: the job is being stopped
                raise result
            memory, (rows, total) = memories[chat], pending[chat]
            ids = [row.id for row in rows]
            writes.append(
                repo.VersionWrite(
                    chat_id=chat,
                    group_id=memory.group_id,
                    version=memory.version + 1,
                    topics=[topic.model_dump(mode="json") for topic in result.topics],
                    message_ids=ids,
                    summarizer=result.summarizer,
                    duration_ms=duration_ms,
                    next_topic_number=result.next_topic_number,
                    total_count=memory.message_count + len(ids),
                )
            )
            usage += usage_rows(
                result.usage, job_id=job_id, purpose="topics", subject_kind="chat", subject_id=chat
            )
            batch.folded[chat] = _Folded(memory.version + 1, len(ids), total - len(ids))
        if writes:
            written = await repo.write_versions(
                session, writes, started_at=started_at, updated_at=now, job_id=job_id, job_try=job_try
            )
            for write in writes:  # only a writer bypassing the row locks could cause this: start over
                marked, memory_rows = written.get(write.chat_id, (0, 0))
                if marked != len(write.message_ids) or memory_rows != 1:
                    raise TransientError(
                        f"chat {write.chat_id!r}: {len(write.message_ids) - marked} message(s) "
                        "were folded concurrently"
                    )
            await insert_usage_rows(session, usage)
    return batch


async def _hand_back(deps: L2Deps, chats: list[str]) -> None:
    """Give taken chats that were not folded their own update job again. If Redis fails here, the
    chats are still due, and the scan cron enqueues them."""
    if not chats:
        return
    try:
        await deps.state.trigger(chats)
    except RedisError as exc:
        logger.warning(
            "could not re-enqueue %d chat(s) (%s: %s); the scan cron enqueues them: %s",
            len(chats),
            type(exc).__name__,
            exc,
            chats[:10],
        )


async def update_topic_memory(
    deps: L2Deps,
    model: MemoryModel,
    chat_id: str,
    *,
    job_id: str | None = None,
    job_try: int | None = None,
    batch_chats: int = 1,
) -> UpdateOutcome:
    """Fold the chat's oldest pending messages (at most L2_QUEUE_MAX_LEN) into a new version.

    With `batch_chats` > 1 the same transaction also folds up to `batch_chats - 1` other chats whose
    queued update jobs have not started yet (they are taken off arq's queue): under load one job then
    does the work of many, without arq's cost per job. Each chat still gets its own version, in order.

    Safe to call any time and concurrently: with nothing pending it is a no-op; a second caller
    waits for the row lock. Raises `NotFoundError` for a chat with no messages and no memory,
    `TransientError` for a lock wait past `L2_LOCK_WAIT_SECONDS` (nothing is written then), and
    whatever the model raised for this chat (the other chats are committed first; a taken chat whose
    model call failed gets its own job back, which retries and records as usual)."""
    seq_before = dict(await deps.state.take_queued(chat_id, batch_chats - 1))
    taken = [chat for chat in seq_before if chat != chat_id]
    now = deps.clock()  # the update's time, in Postgres and in Redis alike
    try:
        batch = await _fold_batch(deps, model, chat_id, taken, job_id, job_try, now)
    except BaseException as exc:
        await _hand_back(deps, taken)
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if isinstance(exc, DBAPIError) and code in _RETRYABLE_SQLSTATES:
            raise TransientError(
                f"chat {chat_id!r} is being updated elsewhere: {_RETRYABLE_SQLSTATES[code]} "
                f"(L2_LOCK_WAIT_SECONDS={deps.settings.l2_lock_wait_seconds:g})"
            ) from exc
        raise
    await _hand_back(deps, batch.skipped + [chat for chat in batch.failed if chat != chat_id])
    for chat, error in batch.failed.items():  # a failed model call still cost tokens
        await record_failed_usage(
            deps.session_factory, error, job_id=job_id, purpose="topics", subject_kind="chat", subject_id=chat
        )
    max_len = deps.settings.l2_queue_max_len
    updates = [
        UpdateDone(
            chat,
            seq_before[chat],
            done.folded,
            done.remaining,
            own_job_id=job_id if chat == chat_id else None,
            backlog=done.folded >= max_len and done.remaining > 0,  # a due backlog is folded to the end
        )
        for chat, done in batch.folded.items()
    ]
    follow_ups = await deps.state.after_updates(updates, now)
    if chat_id in batch.failed:
        raise batch.failed[chat_id]
    own = batch.folded[chat_id]
    others = {chat: done.folded for chat, done in batch.folded.items() if chat != chat_id and done.folded}
    return UpdateOutcome(chat_id, own.version, own.folded, own.remaining, follow_ups.get(chat_id), others)


# --- reading --------------------------------------------------------------------------------------


async def get_topic_memory(
    deps: L2Deps, chat_id: str, *, history: bool = False, history_limit: int = 50
) -> TopicMemoryView:
    """The chat's latest topic memory (version 0 before its first update) and, on request, its
    newest `history_limit` versions. Raises `NotFoundError` for a chat never recorded."""
    async with deps.session_factory() as session:
        memory = await repo.read_memory(session, chat_id)
        pending = await repo.count_pending(session, chat_id)
        group_id = memory.group_id if memory else await repo.chat_group(session, chat_id)
        if group_id is None:
            raise NotFoundError(f"chat {chat_id!r} has no recorded messages and no topic memory")
        versions = await repo.list_versions(session, chat_id, history_limit) if history else []
    return TopicMemoryView(
        chat_id=chat_id,
        group_id=group_id,
        version=memory.version if memory else 0,
        topics=[Topic.model_validate(t) for t in memory.topics] if memory else [],
        message_count=memory.message_count if memory else 0,
        pending_count=pending,
        updated_at=memory.updated_at if memory else None,
        history=[
            TopicMemoryVersionView(
                version=v.version,
                topics=[Topic.model_validate(t) for t in v.topics],
                message_ids=list(v.message_ids),
                summarizer=v.summarizer,
                duration_ms=v.duration_ms,
                started_at=v.started_at,
                created_at=v.created_at,
                job_id=v.job_id,
                job_try=v.job_try,
            )
            for v in versions
        ]
        if history
        else None,
    )
