"""Long tasks across real worker processes: a SIGKILLed worker's task is taken over after its lease
(and not before, while the heartbeat renews it), and two workers never run one task at once."""

from __future__ import annotations

import asyncio

from arq.connections import ArqRedis

from app.client import MemoryClient
from app.config import Settings
from app.tasks import service
from tests.integration.tasks.task_types import VIOLATIONS_KEY, log_key, release_key, runs_key
from tests.support.tasks import TEST_TYPES_MODULE, wait_for_status, wait_until
from tests.support.workers import WorkerProcess, worker_process

LEASE_SECONDS = 10
WORKER_ENV = {
    "LONG_TASK_LOCK_TIMEOUT_SECONDS": str(LEASE_SECONDS),
    "LONG_TASK_HEARTBEAT_SECONDS": "2",
    "LONG_TASK_TYPE_MODULES": TEST_TYPES_MODULE,
}


async def step_log(redis: ArqRedis, task_id: int) -> list[tuple[str, int]]:
    """(state, worker pid) of every step run, in order."""
    entries = await redis.lrange(log_key(task_id), 0, -1)  # type: ignore[misc]
    parsed = [entry.decode().split("|") for entry in entries]
    return [(state, int(worker.split(":")[1])) for state, worker, _ in parsed]


async def test_sigkilled_workers_task_is_taken_over_after_the_lease_and_no_committed_step_reruns(
    settings: Settings, client: MemoryClient, redis: ArqRedis
) -> None:
    with worker_process(settings, WORKER_ENV) as first, worker_process(settings, WORKER_ENV) as second:
        await asyncio.gather(first.wait_started(), second.wait_started())
        task = await client.create_task("test_three_steps", {"block_in_b": True})

        async def b_started() -> bool:
            return int(await redis.get(runs_key(task.id, "b")) or 0) == 1

        await wait_until(b_started, what="step b to start")
        holder_pid = (await step_log(redis, task.id))[-1][1]
        holder, other = (first, second) if first.process.pid == holder_pid else (second, first)
        claimed = await client.get_task(task.id)

        # longer than the lease: the heartbeat keeps it, so the polling other worker never takes it
        loop = asyncio.get_running_loop()
        until = loop.time() + LEASE_SECONDS + 3
        while loop.time() < until:
            await client.kick_tasks()
            assert int(await redis.get(runs_key(task.id, "b")) or 0) == 1
            await asyncio.sleep(1.0)  # paces the polls we make while watching
        renewed = await client.get_task(task.id)
        assert renewed.lease_owner == claimed.lease_owner
        assert renewed.lease_expires_at is not None and claimed.lease_expires_at is not None
        assert renewed.lease_expires_at > claimed.lease_expires_at

        holder.kill()
        await redis.set(release_key(task.id), "1")
        done = await wait_for_status(client, task.id, ("finished",), kick=True, timeout=LEASE_SECONDS + 30)

    assert done.steps_run == 3 and done.result == {"visited": ["a", "b", "c"]}
    log = await step_log(redis, task.id)
    assert [state for state, _ in log] == ["a", "b", "b", "c"]  # only the uncommitted step ran again
    assert log[1][1] == holder.process.pid
    assert log[2][1] == log[3][1] == other.process.pid
    assert done.errors == []  # a crash leaves no record of its own; the lease expiry is the recovery


async def test_two_workers_never_run_one_task_at_the_same_time(
    settings: Settings, client: MemoryClient, redis: ArqRedis
) -> None:
    env = {**WORKER_ENV, "WORKER_MAX_JOBS": "1"}  # one run per worker: kicks spread over both
    first, second = WorkerProcess(settings, env), WorkerProcess(settings, env)
    try:
        await asyncio.gather(first.wait_started(), second.wait_started())
        tasks = [
            await service.create_task(client.session_factory, "test_three_steps", {"work_seconds": 0.05})
            for _ in range(20)
        ]
        await client.kick_tasks()
        await client.kick_tasks()

        async def all_finished() -> bool:
            found = await client.list_tasks(status="finished", task_type="test_three_steps")
            return len(found) == len(tasks)

        await wait_until(all_finished, timeout=60, what="all 20 tasks to finish")
    finally:
        first.kill()
        second.kill()

    assert await redis.lrange(VIOLATIONS_KEY, 0, -1) == []  # type: ignore[misc]
    pids: set[int] = set()
    for task in tasks:
        log = await step_log(redis, task.id)
        assert [state for state, _ in log] == ["a", "b", "c"]
        pids.update(pid for _, pid in log)
    assert pids == {first.process.pid, second.process.pid}
