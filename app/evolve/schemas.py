"""What `MemoryClient.get_group_memory` returns: typed views of the consensus and its history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.evolve.models import GroupMemory, GroupMemoryVersion
from app.llm.base import ConsensusItem, ConsensusKind


class PreviousItem(BaseModel):
    kind: ConsensusKind
    statement: str


class DiffEntry(BaseModel):
    """One item-level change of a distillation."""

    op: Literal["added", "updated", "retired"]
    item_id: str
    kind: ConsensusKind
    statement: str  # after the change (for `retired`: the statement that was retired)
    support: list[str] = Field(default_factory=list)  # topic refs chat_id/topic_id
    before: PreviousItem | None = None  # `updated` only
    reason: str


class RejectedChange(BaseModel):
    """A change the model proposed that we refused (or a part of it we dropped), and why."""

    change: int  # its index in the model's answer
    action: str
    item_id: str | None = None
    reason: str


class GroupMemoryVersionView(BaseModel):
    version: int
    created_at: datetime
    trigger: Literal["daily", "manual"]
    day: date | None  # the distillation day of a daily run
    producer: str  # the memory model's name
    duration_ms: int
    job_id: str | None
    topic_version_ids: list[int]  # the topic-memory versions it drew on
    items: list[ConsensusItem]  # the consensus after this version
    diff: list[DiffEntry]
    rejected: list[RejectedChange]

    @classmethod
    def from_row(cls, row: GroupMemoryVersion) -> GroupMemoryVersionView:
        return cls.model_validate(
            {
                "version": row.version,
                "created_at": row.created_at,
                "trigger": row.trigger,
                "day": row.day,
                "producer": row.producer,
                "duration_ms": row.duration_ms,
                "job_id": row.job_id,
                "topic_version_ids": list(row.topic_version_ids),
                "items": row.items,
                "diff": row.diff,
                "rejected": row.rejected,
            }
        )


class GroupMemoryView(BaseModel):
    """A group's current consensus; version 0 and no items when it was never distilled."""

    group_id: str
    version: int
    items: list[ConsensusItem]
    updated_at: datetime | None
    history: list[GroupMemoryVersionView] | None = None  # newest first, when requested
    history_total: int | None = None  # all versions, when history was requested

    @classmethod
    def from_row(cls, group_id: str, row: GroupMemory | None) -> GroupMemoryView:
        if row is None:
            return cls(group_id=group_id, version=0, items=[], updated_at=None)
        items = [ConsensusItem.model_validate(raw) for raw in row.items]
        return cls(group_id=group_id, version=row.version, items=items, updated_at=row.updated_at)
