"""How a step's result becomes the row values its commit writes (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from app.config import load_settings
from app.tasks import outcome
from app.tasks.registry import FINISHED, State, TaskType
from app.tasks.step import StepContext
from app.tasks.views import TaskView

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class In(BaseModel):
    pass


async def noop(ctx: StepContext) -> str:
    return FINISHED


TYPE = TaskType(
    name="t",
    input_model=In,
    initial="a",
    states={"a": State(noop, ("b",)), "b": State(noop, ("a", FINISHED))},
    max_attempts=3,
    backoff_base_seconds=5,
    backoff_max_seconds=60,
)


def task(**changes: object) -> TaskView:
    base = {
        "id": 1,
        "task_type": "t",
        "status": "running",
        "state": "a",
        "input": {},
        "data": {},
        "result": None,
        "priority": 0,
        "parent_id": None,
        "attempts": 0,
        "steps_run": 0,
        "state_visits": {"a": 1},
        "next_run_at": NOW,
        "lease_owner": "w",
        "lease_expires_at": NOW,
        "cancel_requested": False,
        "errors": [],
        "created_at": NOW,
        "updated_at": NOW,
        "finished_at": None,
    }
    return TaskView.model_validate({**base, **changes})


def test_advance_counts_the_visit_and_resets_attempts() -> None:
    values = outcome.advance(task(attempts=2), "b", data={"x": 1}, result=None, waiting=False, now=NOW)
    assert values["state_visits"] == {"a": 1, "b": 1} and values["attempts"] == 0
    assert values["status"] == "running" and values["steps_run"] == 1 and "finished_at" not in values
    waiting = outcome.advance(task(), "b", data={}, result=None, waiting=True, now=NOW)
    assert waiting["status"] == "waiting"
    done = outcome.advance(task(), FINISHED, data={}, result={"ok": True}, waiting=False, now=NOW)
    assert done["status"] == "finished" and done["finished_at"] == NOW and done["state_visits"] == {"a": 1}


def test_revisit_limit() -> None:
    assert outcome.revisit_limit_exceeded(task(state_visits={"a": 2}), "a", 3) is None
    reason = outcome.revisit_limit_exceeded(task(state_visits={"a": 3}), "a", 3)
    assert reason == "state 'a' would be entered 4 times, more than the limit of 3: the task is looping"
    assert outcome.revisit_limit_exceeded(task(state_visits={"a": 99}), FINISHED, 3) is None


def test_failed_tries_back_off_then_give_up() -> None:
    settings = load_settings()
    entry = {"message": "boom"}
    first = outcome.failed_try(task(), TYPE, settings, entry, NOW)
    assert first == {"attempts": 1, "errors": [entry], "next_run_at": NOW + timedelta(seconds=5)}
    second = outcome.failed_try(task(attempts=1, errors=[entry]), TYPE, settings, entry, NOW)
    assert second["next_run_at"] == NOW + timedelta(seconds=10)
    last = outcome.failed_try(task(attempts=2, errors=[entry, entry]), TYPE, settings, entry, NOW)
    assert last["status"] == "failed" and last["attempts"] == 3
    assert last["errors"][-1]["message"] == "step 'a' failed 3 times (max 3)" and len(last["errors"]) == 4
