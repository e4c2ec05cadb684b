"""Distil one group's consensus memory from its changed topic memories, in one transaction.

`distil_group` locks the group's row, reads its consensus and the latest topic-memory version of
each chat that changed since the last distillation, asks the model, applies the validated changes,
and writes the new version, the advanced per-chat cursors, the usage and (for a daily run) the
day's ledger row; then commits. Guarantees:
- Idempotent: with no changed chat nothing is written and the outcome says why
  ("nothing to distil" when the group has no topic memory at all, "no changes since last
  distillation" otherwise).
- Atomic: a fault anywhere before the commit (model error, lost connection, crash) rolls
  everything back; the rerun sees the same inputs and produces the one version. Only the cost of
  model calls that failed (`exc.usage`) is stored, in a transaction of its own.
- Serialised per group: the row lock is held across the model call, so two runs for the same
  group never both distil the same inputs (the second waits, then finds nothing new).
- Once per day: a daily run (`day` given) checks the group's ledger row for that day under the lock
  and inserts it in the same transaction as the version (the primary key is the last guard).
  A manual run (`day=None`) ignores the ledger: it is an explicit request and distils whatever
  is new now; a later daily run that day then distils only what arrived after it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import pydantic
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.constants import EVOLVE_MAX_CHATS_PER_RUN
from app.errors import PermanentError, ValidationError
from app.evolve import repository as repo
from app.evolve.consensus import apply_changes
from app.evolve.models import GroupMemoryVersion
from app.l2.models import ID_LENGTH, TopicMemoryVersion
from app.llm.accounting import record_failed_usage, record_usage
from app.llm.base import ConsensusItem, MemoryModel, Topic, TopicSource

logger = logging.getLogger("app.evolve")

OUTCOME_DISTILLED = "distilled"
OUTCOME_NOTHING = "nothing to distil"
OUTCOME_UNCHANGED = "no changes since last distillation"
OUTCOME_ALREADY_TODAY = "already distilled today"
USAGE_PURPOSE = "consensus"


@dataclass(frozen=True)
class DistillResult:
    """What one run did; `as_dict()` is the job's result."""

    group_id: str
    outcome: str
    trigger: str  # daily, manual
    day: date | None = None
    version: int | None = None  # the new version, or the current one when nothing was written
    added: int = 0
    updated: int = 0
    retired: int = 0
    rejected: int = 0  # model changes we refused (see the version's `rejected`)
    topic_version_ids: list[int] = field(default_factory=list)
    pending_chats: int = 0  # changed chats left for the next run (over EVOLVE_MAX_CHATS_PER_RUN)

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["day"] = self.day.isoformat() if self.day else None
        return result


def validate_group_id(group_id: object) -> str:
    if not isinstance(group_id, str) or not group_id.strip():
        raise ValidationError("group_id", "must be a non-empty string")
    if len(group_id) > ID_LENGTH:
        raise ValidationError("group_id", f"must be at most {ID_LENGTH} characters, got {len(group_id)}")
    return group_id


async def distil_group(
    session_factory: async_sessionmaker[AsyncSession],
    model: MemoryModel,
    group_id: str,
    now: datetime,
    job_id: str | None,
    *,
    day: date | None = None,
    max_chats: int = EVOLVE_MAX_CHATS_PER_RUN,
) -> DistillResult:
    """Distil `group_id` now; `day` makes it that day's daily run (at most one per group and day)."""
    validate_group_id(group_id)
    async with session_factory() as session:  # leaving without commit rolls everything back
        try:
            result = await _distil_locked(session, model, group_id, now, job_id, day, max_chats)
        except Exception as exc:  # re-raised: only the failed model calls' cost is kept, on its own
            await session.rollback()
            await record_failed_usage(
                session_factory,
                exc,
                job_id=job_id,
                purpose=USAGE_PURPOSE,
                subject_kind="group",
                subject_id=group_id,
            )
            raise
        if result.outcome == OUTCOME_DISTILLED:
            await session.commit()
            logger.info(
                "group %s consensus v%s (%s): +%d ~%d -%d, %d rejected, from topic versions %s",
                group_id, result.version, result.trigger, result.added, result.updated,
                result.retired, result.rejected, result.topic_version_ids,
            )  # fmt: skip
        else:
            await session.rollback()
        return result


async def _distil_locked(
    session: AsyncSession,
    model: MemoryModel,
    group_id: str,
    now: datetime,
    job_id: str | None,
    day: date | None,
    max_chats: int,
) -> DistillResult:
    trigger = "manual" if day is None else "daily"
    memory = await repo.lock_group_memory(session, group_id)
    if day is not None and await repo.day_claimed(session, group_id, day):
        return DistillResult(group_id, OUTCOME_ALREADY_TODAY, trigger, day, memory.version)
    chats, total = await repo.changed_chats(session, group_id, max_chats)
    if not chats:
        outcome = OUTCOME_UNCHANGED if await repo.has_topic_memory(session, group_id) else OUTCOME_NOTHING
        return DistillResult(group_id, outcome, trigger, day, memory.version)
    rows = await repo.topic_versions(session, chats)
    missing = sorted({(c.chat_id, c.version) for c in chats} - {(r.chat_id, r.version) for r in rows})
    if missing:
        raise PermanentError(f"topic memory versions missing for (chat, version) {missing}")
    sources = [_source(row) for row in rows]
    previous = [_stored_item(group_id, raw) for raw in memory.items]
    known_refs = {f"{source.chat_id}/{topic.id}" for source in sources for topic in source.topics}

    started = time.monotonic()
    update = await model.distil_consensus(group_id, previous, sources)
    applied = apply_changes(previous, update.changes, memory.next_item_number, known_refs)
    duration_ms = int((time.monotonic() - started) * 1000)

    version = memory.version + 1
    topic_version_ids = [row.id for row in rows]
    await repo.add_version(
        session,
        GroupMemoryVersion(
            group_id=group_id,
            version=version,
            items=[item.model_dump(mode="json") for item in applied.items],
            diff=applied.diff,
            rejected=applied.rejected,
            topic_version_ids=topic_version_ids,
            trigger=trigger,
            day=day,
            producer=model.name,
            duration_ms=duration_ms,
            job_id=job_id,
        ),
    )
    memory.version = version
    memory.items = [item.model_dump(mode="json") for item in applied.items]
    memory.next_item_number = applied.next_item_number
    memory.updated_at = now
    await repo.advance_cursors(session, group_id, rows, now)
    if day is not None:
        await repo.claim_day(session, group_id, day, version, job_id)
    await record_usage(
        session, update.usage, job_id=job_id, purpose=USAGE_PURPOSE, subject_kind="group", subject_id=group_id
    )
    await session.flush()
    counts = applied.counts
    return DistillResult(
        group_id,
        OUTCOME_DISTILLED,
        trigger,
        day,
        version,
        added=counts["added"],
        updated=counts["updated"],
        retired=counts["retired"],
        rejected=len(applied.rejected),
        topic_version_ids=topic_version_ids,
        pending_chats=total - len(rows),
    )


def _source(row: TopicMemoryVersion) -> TopicSource:
    try:
        topics = [Topic.model_validate(raw) for raw in row.topics]
    except pydantic.ValidationError as exc:
        raise PermanentError(
            f"topic memory version {row.id} (chat {row.chat_id} v{row.version}) has malformed topics: {exc}"
        ) from exc
    return TopicSource(chat_id=row.chat_id, version_id=row.id, topics=topics)


def _stored_item(group_id: str, raw: dict[str, Any]) -> ConsensusItem:
    try:
        return ConsensusItem.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise PermanentError(f"group {group_id} has a malformed stored consensus item: {exc}") from exc
