"""The due-chat scan and the reconcile step (Redis rebuilt from Postgres).

- `scan`: one range query on the due index per batch, then one script call that enqueues an update
  for each due chat without a queued one. Its cost grows with the number of due chats only.
- `reconcile`: walks the pending messages grouped by chat (the partial index), in chunks, and
  rewrites each chat's count and due time, plus every chat's last update; then scans. Run at
  worker start, by cron and on demand, it makes Redis disposable: after a FLUSHDB nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.constants import L2_RECONCILE_CHUNK, L2_SCAN_BATCH
from app.l2 import repository as repo
from app.l2.service import L2Deps


@dataclass(frozen=True)
class ReconcileReport:
    pending_chats: int  # chats with pending messages, their counts and due times rewritten
    updated_chats: int  # chats whose last-update time was rewritten
    enqueued: int  # updates enqueued by the scan that followed


async def scan(deps: L2Deps, now: datetime | None = None) -> int:
    """Enqueue an update for every chat due at `now` (default: the deps clock); returns how many."""
    now = now or deps.clock()
    enqueued, offset = 0, 0
    while True:
        due = await deps.state.due_chats(now, offset, L2_SCAN_BATCH)
        enqueued += len(await deps.state.trigger(due))
        if len(due) < L2_SCAN_BATCH:
            return enqueued
        offset += L2_SCAN_BATCH


async def reconcile(deps: L2Deps, now: datetime | None = None) -> ReconcileReport:
    """Rebuild the Redis L2 state from Postgres, then enqueue what is due."""
    now = now or deps.clock()
    pending_total, after = 0, None
    while True:
        async with deps.session_factory() as session:
            chunk = await repo.pending_chats(session, after, L2_RECONCILE_CHUNK)
        if not chunk:
            break
        await deps.state.restore([(c.chat_id, c.pending, c.updated_at) for c in chunk], [], now)
        pending_total += len(chunk)
        after = chunk[-1].chat_id
    updated_total, after = 0, None
    while True:
        async with deps.session_factory() as session:
            updated = await repo.updated_chats(session, after, L2_RECONCILE_CHUNK)
        if not updated:
            break
        await deps.state.restore([], updated, now)
        updated_total += len(updated)
        after = updated[-1][0]
    return ReconcileReport(pending_total, updated_total, await scan(deps, now))
