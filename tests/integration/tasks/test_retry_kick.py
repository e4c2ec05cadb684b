"""A step retry due within LONG_TASK_RETRY_KICK_SECONDS runs at its backoff time, not at the next
minute poll: the run that failed it enqueues a run deferred to that time."""

from __future__ import annotations

from datetime import datetime

from app.client import MemoryClient
from tests.support.settings import make_test_settings
from tests.support.tasks import run_burst


async def test_a_short_backoff_is_kept_without_waiting_for_the_poll() -> None:
    settings = make_test_settings(long_task_retry_kick_seconds=60)
    async with MemoryClient(settings) as client:
        task = await client.create_task("test_flaky", {})  # fails on try 1, retried after 1 s
        await run_burst(settings)  # no cron: only the create's kick and what the runs enqueue
        done = await client.get_task(task.id)
    assert done.status == "finished", done.errors
    (failure,) = done.errors  # try 1 failed, try 2 finished
    assert failure["message"] == "RuntimeError: flaky on try 1"
    failed_at = datetime.fromisoformat(failure["at"])
    assert done.finished_at is not None
    assert 1.0 <= (done.finished_at - failed_at).total_seconds() < 10.0  # the backoff, not the poll


async def test_with_the_kick_turned_off_the_retry_waits_for_the_poll() -> None:
    settings = make_test_settings(long_task_retry_kick_seconds=0)
    async with MemoryClient(settings) as client:
        task = await client.create_task("test_flaky", {})
        await run_burst(settings)
        waiting = await client.get_task(task.id)
    assert (waiting.status, waiting.attempts) == ("running", 1)  # try 2 did not run in this burst
    (failure,) = waiting.errors
    assert (waiting.next_run_at - datetime.fromisoformat(failure["at"])).total_seconds() == 1.0
