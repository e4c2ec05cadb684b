"""Every query on `long_tasks`: claim with leases, conditional step commits, cancel, retry, wake-ups.

The lease is the only guard a worker needs: every write a worker makes while running a task is
conditional on `lease_owner` still being its own run id, so once another worker has taken a task
over (after the lease expired), the old worker's late commit changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Integer, Row, Table, bindparam, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.tasks.models import FINAL_STATUSES, LongTask
from app.tasks.views import TaskView

TASKS: Table = cast(Table, LongTask.__table__)
CLAIMABLE = ("queued", "running")


def to_view(row: Row[Any] | LongTask) -> TaskView:
    return TaskView.model_validate(row)


async def insert_task(
    session: AsyncSession,
    *,
    task_type: str,
    state: str,
    input: dict[str, Any],
    priority: int,
    parent_id: int | None,
) -> TaskView:
    """A new queued task in its initial `state` (visited once), due now (database clock)."""
    statement = (
        TASKS.insert()
        .values(
            task_type=task_type,
            state=state,
            state_visits={state: 1},
            input=input,
            priority=priority,
            parent_id=parent_id,
        )
        .returning(*TASKS.c)
    )
    return to_view((await session.execute(statement)).one())


async def get_task(session: AsyncSession, task_id: int) -> TaskView | None:
    row = (await session.execute(select(*TASKS.c).where(TASKS.c.id == task_id))).one_or_none()
    return None if row is None else to_view(row)


async def list_tasks(
    session: AsyncSession,
    *,
    status: str | None = None,
    task_type: str | None = None,
    parent_id: int | None = None,
    limit: int = 100,
) -> list[TaskView]:
    """Newest first, filtered by whichever of status, type and parent are given."""
    statement = select(*TASKS.c).order_by(TASKS.c.id.desc()).limit(limit)
    if status is not None:
        statement = statement.where(TASKS.c.status == status)
    if task_type is not None:
        statement = statement.where(TASKS.c.task_type == task_type)
    if parent_id is not None:
        statement = statement.where(TASKS.c.parent_id == parent_id)
    return [to_view(row) for row in (await session.execute(statement)).all()]


def _claim_statement() -> Any:
    now = bindparam("now", type_=TASKS.c.next_run_at.type)
    picked = (
        select(TASKS.c.id)
        .where(
            TASKS.c.status.in_(CLAIMABLE),
            TASKS.c.next_run_at <= now,
            or_(TASKS.c.lease_expires_at.is_(None), TASKS.c.lease_expires_at <= now),
        )
        .order_by(TASKS.c.priority.desc(), TASKS.c.id)
        .limit(bindparam("limit", type_=Integer()))
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    return (
        update(TASKS)
        .where(TASKS.c.id == picked.c.id)
        .values(
            lease_owner=bindparam("owner"),
            lease_expires_at=bindparam("lease_until", type_=TASKS.c.lease_expires_at.type),
            status="running",
            updated_at=func.now(),
        )
        .returning(*TASKS.c)
    )


_CLAIM = _claim_statement()  # built once: the claim is the hottest statement of the engine


async def claim_tasks(
    session: AsyncSession | AsyncConnection, *, owner: str, now: datetime, lease_until: datetime, limit: int
) -> list[TaskView]:
    """Lease up to `limit` due, unleased (or lease-expired) tasks: highest priority, oldest first.

    One statement: the CTE locks the rows it picks with SKIP LOCKED (so concurrent claimers never
    wait for or pick the same rows) and the UPDATE sets the lease in the same statement, so it is
    atomic even in autocommit mode. `ix_long_tasks_claimable` serves the CTE: it walks the index in
    (priority DESC, id) order and stops after `limit` claimable rows.
    """
    params = {"now": now, "limit": limit, "owner": owner, "lease_until": lease_until}
    rows = [to_view(row) for row in (await session.execute(_CLAIM, params)).all()]
    rows.sort(key=lambda view: (-view.priority, view.id))
    return rows


async def renew_lease(
    session: AsyncSession, *, task_id: int, owner: str, lease_until: datetime
) -> bool | None:
    """Extend our lease; returns the task's `cancel_requested`, or None when the lease is no longer ours."""
    statement = (
        update(TASKS)
        .where(TASKS.c.id == task_id, TASKS.c.lease_owner == owner)
        .values(lease_expires_at=lease_until)
        .returning(TASKS.c.cancel_requested)
    )
    value = (await session.execute(statement)).scalar_one_or_none()
    return None if value is None else bool(value)


async def read_cancel_requested(session: AsyncSession, task_id: int) -> bool:
    value = await session.scalar(select(TASKS.c.cancel_requested).where(TASKS.c.id == task_id))
    return bool(value)


STEP_COLUMNS = (
    "state",
    "status",
    "data",
    "result",
    "attempts",
    "steps_run",
    "state_visits",
    "next_run_at",
    "errors",
    "finished_at",
    "lease_owner",
    "lease_expires_at",
)
# Built once: a constant statement is compiled and cache-keyed once, which matters at ~1,000 steps/s.
_COMMIT_STEP = (
    update(TASKS)
    .where(TASKS.c.id == bindparam("task_id"), TASKS.c.lease_owner == bindparam("owner"))
    .values({name: bindparam(f"new_{name}", type_=TASKS.c[name].type) for name in STEP_COLUMNS})
    .values(updated_at=func.now())
    .returning(TASKS.c.cancel_requested)
)


async def commit_step(
    connection: AsyncSession | AsyncConnection, *, task_id: int, owner: str, values: dict[str, Any]
) -> bool | None:
    """Write a step's outcome (every column of `STEP_COLUMNS`) if we still hold the lease.

    Returns `cancel_requested`, or None when the lease is no longer ours (nothing written). In a
    transaction it must come first: its row lock keeps anyone else from committing a step of this
    task until ours is done. On its own (autocommit) it is one atomic statement.
    """
    params = {f"new_{name}": values[name] for name in STEP_COLUMNS}
    result = await connection.execute(_COMMIT_STEP, {"task_id": task_id, "owner": owner, **params})
    value = result.scalar_one_or_none()
    return None if value is None else bool(value)


async def lock_task(session: AsyncSession, task_id: int) -> None:
    """Lock one task row for this transaction (a no-op if it is gone)."""
    await session.execute(select(TASKS.c.id).where(TASKS.c.id == task_id).with_for_update())


async def lock_if_leased(session: AsyncSession, *, task_id: int, owner: str) -> bool:
    """Lock the task row for this transaction if our lease still holds; False when it is lost."""
    statement = (
        select(TASKS.c.id).where(TASKS.c.id == task_id, TASKS.c.lease_owner == owner).with_for_update()
    )
    return (await session.scalar(statement)) is not None


async def insert_children(session: AsyncSession, parent_id: int, children: list[dict[str, Any]]) -> None:
    """Sub-tasks a step spawned, written in that step's transaction: a retried step spawns none twice."""
    if children:
        await session.execute(TASKS.insert(), [{**child, "parent_id": parent_id} for child in children])


async def wake_parent(session: AsyncSession, parent_id: int, now: datetime) -> None:
    """Let a waiting parent continue once every child is final.

    The parent row is locked first so two children finishing at once serialise here, and the
    second sees the first's commit: a parent is never left waiting for children that are all final.
    """
    await lock_task(session, parent_id)
    await session.execute(_wake_waiting().where(TASKS.c.id == parent_id), {"now": now})


async def wake_ready_parents(session: AsyncSession, now: datetime) -> int:
    """Safety net for the poll: every waiting task whose children are all final becomes due."""
    result = await session.execute(_wake_waiting().returning(TASKS.c.id), {"now": now})
    return len(result.all())


def _wake_waiting() -> Any:
    child = TASKS.alias("child")
    unfinished_child = (
        select(literal(1))
        .select_from(child)
        .where(child.c.parent_id == TASKS.c.id, child.c.status.not_in(FINAL_STATUSES))
        .exists()
    )
    return (
        update(TASKS)
        .where(TASKS.c.status == "waiting", ~unfinished_child)
        .values(status="running", next_run_at=bindparam("now"), updated_at=func.now())
    )


_SUBTREE = text(
    """
    WITH RECURSIVE subtree(id) AS (
        SELECT CAST(:root AS BIGINT)
        UNION ALL
        SELECT t.id FROM long_tasks t JOIN subtree s ON t.parent_id = s.id
    ), locked AS (  -- in id order (a parent before its children), as every other writer locks them
        SELECT id FROM long_tasks
        WHERE id IN (SELECT id FROM subtree) AND status NOT IN ('finished', 'failed', 'canceled')
        ORDER BY id FOR UPDATE
    )
    UPDATE long_tasks SET
        cancel_requested = true,
        status = CASE WHEN status = 'waiting' THEN 'running' ELSE status END,
        next_run_at = LEAST(next_run_at, :now),
        updated_at = now()
    WHERE id IN (SELECT id FROM locked)
    RETURNING id
    """
)


async def request_cancel(
    session: AsyncSession, root_id: int, now: datetime, *, include_root: bool = True
) -> int:
    """Flag a task and all its unfinished descendants for cancellation and make them due now.

    A worker claims each one and ends it `canceled` (running its hook); one that is running now
    sees the flag after its current step, or during it through `StepContext.check_canceled`.
    """
    result = await session.execute(_SUBTREE, {"root": root_id, "now": now})
    ids = [row[0] for row in result.all()]
    return len([task_id for task_id in ids if include_root or task_id != root_id])


async def retry_failed(session: AsyncSession, task_id: int, now: datetime) -> TaskView | None:
    """Make a failed task due again in the state it failed in, with fresh attempt and visit counts."""
    statement = (
        update(TASKS)
        .where(TASKS.c.id == task_id, TASKS.c.status == "failed")
        .values(
            status="running",
            attempts=0,
            state_visits={},
            next_run_at=now,
            finished_at=None,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=func.now(),
        )
        .returning(*TASKS.c)
    )
    row = (await session.execute(statement)).one_or_none()
    return None if row is None else to_view(row)


async def next_due_at(session: AsyncSession, after: datetime, until: datetime) -> datetime | None:
    """The earliest time in (after, until] at which a claimable task becomes due (a retry's backoff)."""
    statement = select(func.min(TASKS.c.next_run_at)).where(
        TASKS.c.status.in_(CLAIMABLE), TASKS.c.next_run_at > after, TASKS.c.next_run_at <= until
    )
    due: datetime | None = await session.scalar(statement)
    return due


async def any_due(session: AsyncSession, now: datetime) -> bool:
    """Whether some task could be claimed right now (decides whether to kick another run)."""
    statement = (
        select(TASKS.c.id)
        .where(
            TASKS.c.status.in_(CLAIMABLE),
            TASKS.c.next_run_at <= now,
            or_(TASKS.c.lease_expires_at.is_(None), TASKS.c.lease_expires_at <= now),
        )
        .limit(1)
    )
    return (await session.scalar(statement)) is not None
