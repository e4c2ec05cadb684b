"""The long-task engine in-process (burst workers, real Postgres and Redis): steps, retries with
backoff, the revisit bound, timeouts as failed tries, sub-tasks and cancellation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import cast

from arq import cron
from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from sqlalchemy import text

from app.client import MemoryClient
from app.config import Settings
from app.constants import CRON_LONG_TASK_POLL
from app.tasks.jobs import cron_long_task_poll
from tests.integration.tasks.task_types import runs_key
from tests.support.settings import make_test_settings
from tests.support.tasks import FakeClock, kick, run_burst, wait_until
from tests.support.workers import burst_worker


async def runs(redis: ArqRedis, task_id: int, state: str) -> int:
    return int(await redis.get(runs_key(task_id, state)) or 0)


async def test_three_step_task_finishes_with_each_step_run_once(
    settings: Settings, client: MemoryClient, redis: ArqRedis
) -> None:
    task = await client.create_task("test_three_steps", {})
    assert (task.status, task.state, task.state_visits) == ("queued", "a", {"a": 1})

    await run_burst(settings)  # the kick enqueued by create_task

    done = await client.get_task(task.id)
    assert done.status == "finished" and done.state == "finished"
    assert done.result == {"visited": ["a", "b", "c"]}
    assert done.steps_run == 3 and done.errors == []
    assert done.lease_owner is None and done.finished_at is not None
    assert [await runs(redis, task.id, state) for state in "abc"] == [1, 1, 1]


async def test_failing_step_backs_off_exponentially_then_fails_with_full_history(
    settings: Settings, client: MemoryClient, redis: ArqRedis
) -> None:
    task = await client.create_task("test_failing", {})  # max 3 tries, backoff 10 s then 15 s (cap)
    clock = FakeClock()  # starts at the real now, after the task became due

    await run_burst(settings, clock)
    first = await client.get_task(task.id)
    assert (first.status, first.attempts) == ("running", 1)
    assert first.next_run_at == clock.now + timedelta(seconds=10)

    await kick(client)
    await run_burst(settings, clock)  # not due yet: nothing runs
    assert await runs(redis, task.id, "work") == 1

    clock.advance(10)
    await kick(client)
    await run_burst(settings, clock)
    second = await client.get_task(task.id)
    assert second.attempts == 2 and second.next_run_at == clock.now + timedelta(seconds=15)

    clock.advance(15)
    await kick(client)
    await run_burst(settings, clock)
    failed = await client.get_task(task.id)
    assert failed.status == "failed" and failed.state == "work"
    assert await runs(redis, task.id, "work") == 3
    assert [entry["message"] for entry in failed.errors] == [
        "RuntimeError: boom on try 1",
        "RuntimeError: boom on try 2",
        "RuntimeError: boom on try 3",
        "step 'work' failed 3 times (max 3)",
    ]
    assert "Traceback" in failed.errors[0]["traceback"]

    clock.advance(3600)
    await kick(client)
    await run_burst(settings, clock)  # a failed task is never picked up again
    assert await runs(redis, task.id, "work") == 3


async def test_retry_resumes_a_failed_task(settings: Settings, client: MemoryClient, redis: ArqRedis) -> None:
    task = await client.create_task("test_failing", {"succeed_when_key": "tt:fixed"})
    clock = FakeClock()
    for _ in range(3):
        await kick(client)
        await run_burst(settings, clock)
        clock.advance(60)
    assert (await client.get_task(task.id)).status == "failed"

    await redis.set("tt:fixed", "1")
    retried = await client.retry_task(task.id)
    assert (retried.status, retried.attempts) == ("running", 0)
    await run_burst(settings, clock)
    done = await client.get_task(task.id)
    assert done.status == "finished"
    assert len(done.errors) == 4  # the earlier history is kept


async def test_a_task_that_keeps_revisiting_a_state_fails_with_a_clear_reason(
    settings: Settings, client: MemoryClient
) -> None:
    task = await client.create_task("test_looping", {})  # ping <-> pong, at most 3 visits per state
    await run_burst(settings)
    failed = await client.get_task(task.id)
    assert failed.status == "failed"
    assert failed.state_visits == {"ping": 3, "pong": 3}
    assert failed.errors[-1]["kind"] == "loop"
    assert failed.errors[-1]["message"] == (
        "state 'ping' would be entered 4 times, more than the limit of 3: the task is looping"
    )


async def test_a_handler_returning_an_undeclared_state_fails_the_task_without_retries(
    settings: Settings, client: MemoryClient
) -> None:
    task = await client.create_task("test_bad_transition", {})
    await run_burst(settings)
    failed = await client.get_task(task.id)
    assert failed.status == "failed" and failed.state == "work" and failed.steps_run == 0
    assert [(entry["kind"], entry["message"]) for entry in failed.errors] == [
        ("bad_transition", "handler of state 'work' returned 'nowhere', not one of: finished")
    ]


async def test_job_timeout_mid_step_is_a_failed_try_not_a_stranded_task(
    client: MemoryClient, redis: ArqRedis, settings: Settings
) -> None:
    short = make_test_settings(long_task_job_timeout_seconds=4, long_task_run_budget_seconds=1)
    task = await client.create_task("test_three_steps", {"block_first_try_of_b": True})

    await run_burst(short)  # try 1 of b hangs until the job times out; the job's retry runs try 2

    done = await client.get_task(task.id)
    assert done.status == "finished"
    assert [entry["kind"] for entry in done.errors] == ["interrupted"]
    assert done.errors[0]["state"] == "b"
    assert [await runs(redis, task.id, state) for state in "abc"] == [1, 2, 1]


async def test_parent_waits_for_its_children_then_continues(settings: Settings, client: MemoryClient) -> None:
    parent = await client.create_task("test_parent", {"children": 3, "child_type": "test_quick_child"})

    await run_burst(settings)  # spawn -> waiting; the children run and finish; the last wakes the parent

    done = await client.get_task(parent.id)
    children = await client.list_tasks(task_type="test_quick_child")
    assert len(children) == 3 and {child.parent_id for child in children} == {parent.id}
    assert done.status == "finished" and done.steps_run == 2
    assert done.result == {"children": {str(child.id): "finished" for child in children}}
    assert done.finished_at is not None
    assert all(child.finished_at is not None and child.finished_at <= done.finished_at for child in children)


async def test_poll_resumes_a_parent_left_waiting_with_all_children_ended(
    settings: Settings, client: MemoryClient
) -> None:
    parent = await client.create_task("test_parent", {"children": 1, "child_type": "test_quick_child"})
    await run_burst(settings)
    async with client.session_factory.begin() as session:  # as if the last child's wake-up were lost
        await session.execute(
            text("UPDATE long_tasks SET status = 'waiting', state = 'collect', result = NULL WHERE id = :id"),
            {"id": parent.id},
        )

    poll = cron(cast(WorkerCoroutine, cron_long_task_poll), name=CRON_LONG_TASK_POLL, run_at_startup=True)
    await run_burst(settings, cron_jobs=[poll])

    resumed = await client.get_task(parent.id)
    assert resumed.status == "finished" and resumed.result is not None
    assert list(resumed.result["children"].values()) == ["finished"]


async def test_cancel_stops_a_running_task_and_its_children(
    settings: Settings, client: MemoryClient, redis: ArqRedis
) -> None:
    parent = await client.create_task("test_parent", {"children": 2})
    worker = burst_worker(settings)
    job = asyncio.create_task(worker.main())

    async def children_running() -> bool:
        return len(await redis.keys("tt:child-running:*")) == 2

    await wait_until(children_running, what="both children to be mid-step")
    await client.cancel_task(parent.id)
    await asyncio.wait_for(job, timeout=20)  # well before a child's 30 s step would end by itself
    await worker.close()

    assert (await client.get_task(parent.id)).status == "canceled"
    children = await client.list_tasks(task_type="test_until_canceled")
    assert len(children) == 2
    for child in children:
        assert child.status == "canceled" and child.parent_id == parent.id
        assert child.steps_run == 0 and child.errors == []
        assert await redis.lrange(f"tt:changes:{child.id}", 0, -1) == [b"work->canceled"]  # type: ignore[misc]  # the hook ran
