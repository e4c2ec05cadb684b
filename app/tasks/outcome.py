"""Turning what a step did into the row values its commit writes (pure functions, no I/O)."""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta
from typing import Any

from app.config import Settings
from app.tasks.registry import CANCELED, FAILED, FINAL_STATES, FINISHED, TaskType
from app.tasks.views import TaskView

TRACEBACK_CHARS = 4000  # tail of a traceback kept per error entry


def error_entry(
    task: TaskView, exc: BaseException | None, kind: str, message: str, at: datetime
) -> dict[str, Any]:
    """One entry of a task's error history."""
    entry: dict[str, Any] = {
        "at": at.isoformat(),
        "state": task.state,
        "attempt": task.attempts + 1,
        "kind": kind,  # step_error, interrupted, loop, bad_transition, invalid_input, hook_error
        "message": message,
    }
    if exc is not None:
        entry["error_type"] = type(exc).__name__
        entry["traceback"] = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]
    return entry


def max_attempts(task_type: TaskType, settings: Settings) -> int:
    return task_type.max_attempts or settings.long_task_max_attempts


def max_visits(task_type: TaskType, settings: Settings) -> int:
    return task_type.max_state_visits or settings.long_task_max_state_visits


def advance(
    task: TaskView,
    next_state: str,
    *,
    data: dict[str, Any],
    result: dict[str, Any] | None,
    waiting: bool,
    now: datetime,
) -> dict[str, Any]:
    """A successful step: the new state, its status, data, and a fresh attempt count."""
    visits = dict(task.state_visits)
    if next_state not in FINAL_STATES:
        visits[next_state] = visits.get(next_state, 0) + 1
    if next_state == FINISHED:
        status = FINISHED
    elif next_state in (FAILED, CANCELED):
        status = next_state
    else:
        status = "waiting" if waiting else "running"
    values: dict[str, Any] = {
        "state": next_state,
        "status": status,
        "data": data,
        "result": result,
        "attempts": 0,
        "steps_run": task.steps_run + 1,
        "state_visits": visits,
        "next_run_at": now,
    }
    if status in FINAL_STATES:
        values["finished_at"] = now
    return values


def revisit_limit_exceeded(task: TaskView, next_state: str, limit: int) -> str | None:
    """The failure reason when entering `next_state` would exceed `limit` visits, else None."""
    if next_state in FINAL_STATES:
        return None
    visits = task.state_visits.get(next_state, 0) + 1
    if visits <= limit:
        return None
    return (
        f"state {next_state!r} would be entered {visits} times, more than the limit of {limit}: "
        f"the task is looping"
    )


def failed_try(
    task: TaskView, task_type: TaskType, settings: Settings, entry: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """A step that raised: retry after backoff, or fail the task once the attempts are used up."""
    attempts = task.attempts + 1
    errors = [*task.errors, entry]
    limit = max_attempts(task_type, settings)
    if attempts >= limit:
        errors.append(
            {
                "at": now.isoformat(),
                "state": task.state,
                "kind": "gave_up",
                "message": f"step {task.state!r} failed {attempts} times (max {limit})",
            }
        )
        return {
            "status": FAILED,
            "attempts": attempts,
            "errors": errors,
            "finished_at": now,
            "next_run_at": now,
        }
    delay = task_type.backoff_seconds(attempts)
    return {"attempts": attempts, "errors": errors, "next_run_at": now + timedelta(seconds=delay)}


def ended(task: TaskView, status: str, entries: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """The task ends `failed` or `canceled` without a successful step (state stays where it stopped)."""
    return {"status": status, "errors": [*task.errors, *entries], "finished_at": now, "next_run_at": now}


def lease_values(owner: str | None, until: datetime | None) -> dict[str, Any]:
    return {"lease_owner": owner, "lease_expires_at": until}
