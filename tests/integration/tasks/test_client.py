"""The task API on `MemoryClient`: validation before storage, reads, listing, cancel and retry rules,
and the claim order and lease rules underneath."""

from __future__ import annotations

from datetime import timedelta

import pytest
from arq.connections import ArqRedis

from app.client import MemoryClient
from app.config import Settings
from app.constants import JOB_RUN_LONG_TASKS
from app.errors import NotFoundError, ValidationError
from app.tasks.engine import claim
from app.tasks.step import TaskDeps
from tests.support.tasks import FakeClock, run_burst


async def test_create_rejects_unknown_types_and_bad_input_and_stores_nothing(client: MemoryClient) -> None:
    with pytest.raises(ValidationError) as unknown:
        await client.create_task("no_such_type", {})
    assert unknown.value.field == "task_type" and "unknown task type 'no_such_type'" in unknown.value.problem
    with pytest.raises(ValidationError) as bad:
        await client.create_task("test_three_steps", {"work_seconds": "slow"})
    assert bad.value.field == "input.work_seconds"
    with pytest.raises(ValidationError) as missing:
        await client.create_task("rebuild_topic_memory", {})
    assert str(missing.value) == "input.chat_id: Field required"
    with pytest.raises(ValidationError, match="priority"):
        await client.create_task("test_three_steps", {}, priority=10**9)
    with pytest.raises(NotFoundError, match="parent task 999 does not exist"):
        await client.create_task("test_three_steps", {}, parent_id=999)
    assert await client.list_tasks() == []


async def test_create_kicks_a_worker_run_at_once(client: MemoryClient, redis: ArqRedis) -> None:
    await client.create_task("test_three_steps", {})
    assert [job.function for job in await redis.queued_jobs()] == [JOB_RUN_LONG_TASKS]


async def test_get_list_cancel_and_retry_rules(settings: Settings, client: MemoryClient) -> None:
    first = await client.create_task("test_three_steps", {})
    second = await client.create_task("test_looping", {})
    with pytest.raises(NotFoundError, match="task 12345 does not exist"):
        await client.get_task(12345)
    assert [task.id for task in await client.list_tasks()] == [second.id, first.id]
    assert [task.id for task in await client.list_tasks(task_type="test_looping")] == [second.id]
    with pytest.raises(ValidationError, match="status: must be one of"):
        await client.list_tasks(status="done")

    canceled = await client.cancel_task(first.id)  # queued, not running: ends canceled when claimed
    assert canceled.cancel_requested and canceled.status == "queued"
    await run_burst(settings)
    assert (await client.get_task(first.id)).status == "canceled"
    assert (await client.get_task(first.id)).steps_run == 0
    assert [task.id for task in await client.list_tasks(status="failed")] == [second.id]

    again = await client.cancel_task(first.id)  # already ended: unchanged
    assert again.status == "canceled"
    with pytest.raises(ValidationError, match="only a failed task can be retried"):
        await client.retry_task(first.id)


async def test_claim_takes_highest_priority_then_oldest_and_respects_leases(
    settings: Settings, client: MemoryClient
) -> None:
    low = await client.create_task("test_three_steps", {}, priority=0)
    high_old = await client.create_task("test_three_steps", {}, priority=5)
    high_new = await client.create_task("test_three_steps", {}, priority=5)
    clock = FakeClock()
    deps = TaskDeps(settings=settings, session_factory=client.session_factory, clock=clock, worker_id="t:1:a")

    first = await claim(deps, "owner-a", 2)
    assert [task.id for task in first] == [high_old.id, high_new.id]
    assert {task.lease_owner for task in first} == {"owner-a"}
    assert first[0].lease_expires_at == clock.now + timedelta(seconds=settings.long_task_lock_timeout_seconds)

    assert [task.id for task in await claim(deps, "owner-b", 5)] == [low.id]  # leased ones are skipped
    assert await claim(deps, "owner-c", 5) == []

    clock.advance(settings.long_task_lock_timeout_seconds)  # every lease has expired: all can be taken over
    taken = await claim(deps, "owner-d", 5)
    assert [task.id for task in taken] == [high_old.id, high_new.id, low.id]
