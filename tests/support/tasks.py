"""Long-task test helpers: a settable clock, condition polling, burst runs, and task-type loading."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from app.client import MemoryClient
from app.config import Settings
from app.constants import JOB_RUN_LONG_TASKS
from app.tasks.views import TaskView
from tests.support.workers import burst_worker

TEST_TYPES_MODULE = "tests.integration.tasks.task_types"  # LONG_TASK_TYPE_MODULES for worker processes


class FakeClock:
    """An aware UTC clock that only moves when told (`advance`); starts at the real now."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll `check` every 50 ms until it is true; AssertionError after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_status(
    client: MemoryClient,
    task_id: int,
    statuses: tuple[str, ...],
    *,
    timeout: float = 30.0,
    kick: bool = False,
) -> TaskView:
    """Poll until the task has one of `statuses`; with `kick`, enqueue a worker run each second (a poll)."""
    loop = asyncio.get_running_loop()
    last_kick = 0.0

    async def reached() -> bool:
        nonlocal last_kick
        if kick and loop.time() - last_kick > 1.0:
            last_kick = loop.time()
            await client.kick_tasks()
        return (await client.get_task(task_id)).status in statuses

    await wait_until(reached, timeout=timeout, what=f"task {task_id} to be {'/'.join(statuses)}")
    return await client.get_task(task_id)


async def run_burst(settings: Settings, clock: FakeClock | None = None, **overrides: Any) -> None:
    """Drain the queue with an in-process burst worker (clock injected when given)."""
    worker = burst_worker(settings, ctx={"clock": clock} if clock is not None else {}, **overrides)
    try:
        await worker.main()
    finally:
        await worker.close()


async def kick(client: MemoryClient) -> None:
    """What the every-minute poll does: enqueue a run of due tasks."""
    await client.enqueue(JOB_RUN_LONG_TASKS)
