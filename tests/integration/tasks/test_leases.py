"""Lease edge cases driven step by step in-process: a runner whose lease was taken over stops its
step and commits nothing, and an export step re-run after a crash never duplicates a line."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from arq.connections import ArqRedis

from app.client import MemoryClient
from app.config import Settings
from app.tasks import service
from app.tasks.engine import claim
from app.tasks.registry import default_registry
from app.tasks.runner import TaskRunner
from app.tasks.step import TaskDeps
from tests.integration.tasks.task_types import runs_key
from tests.support.settings import make_test_settings
from tests.support.tasks import FakeClock, wait_until

SENT_AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def deps_for(settings: Settings, client: MemoryClient, clock: FakeClock, worker: str) -> TaskDeps:
    return TaskDeps(
        settings=settings,
        session_factory=client.session_factory,
        clock=clock,
        worker_id=worker,
        redis=client.redis,
    )


async def test_a_runner_that_lost_its_lease_stops_the_step_and_commits_nothing(
    client: MemoryClient, redis: ArqRedis
) -> None:
    settings = make_test_settings(long_task_lock_timeout_seconds=10, long_task_heartbeat_seconds=1)
    task = await service.create_task(client.session_factory, "test_three_steps", {"block_in_b": True})
    clock = FakeClock()
    first = deps_for(settings, client, clock, "host:1:a")
    [claimed] = await claim(first, "owner-a", 1)
    runner = TaskRunner(first, default_registry, "owner-a", deadline=time.monotonic() + 60)
    running = asyncio.create_task(runner.run(claimed))

    async def b_started() -> bool:
        return int(await redis.get(runs_key(task.id, "b")) or 0) == 1

    await wait_until(b_started, what="step b to start")
    clock.advance(11)  # owner-a's worker stalls past its lease; owner-b takes the task over
    [taken] = await claim(deps_for(settings, client, clock, "host:2:b"), "owner-b", 1)
    assert taken.id == task.id and taken.state == "b"

    steps = await asyncio.wait_for(running, timeout=10)  # the next heartbeat notices and stops step b

    assert steps == 1  # step a only
    after = await client.get_task(task.id)
    assert after.lease_owner == "owner-b" and after.state == "b" and after.steps_run == 1
    assert after.errors == []


async def test_an_export_step_run_again_after_a_crash_writes_no_line_twice(
    client: MemoryClient, tmp_path: Path
) -> None:
    settings = make_test_settings(long_task_export_dir=str(tmp_path))
    await client.record_messages(
        [
            {
                "chat_id": "c1",
                "message_id": f"m{i}",
                "content": f"message {i}",
                "sent_at": SENT_AT,
            }
            for i in range(5)
        ]
    )
    task = await service.create_task(
        client.session_factory, "export_memories", {"chat_id": "c1", "file_name": "c1.jsonl", "batch_size": 2}
    )
    deps = deps_for(settings, client, FakeClock(), "host:1:a")

    async def one_step() -> None:
        [claimed] = await claim(deps, "owner", 1)
        await TaskRunner(deps, default_registry, "owner", deadline=time.monotonic()).run(claimed)

    await one_step()  # header
    partial = tmp_path / "c1.jsonl.partial"
    with partial.open("a") as handle:  # a crashed step wrote a line but never committed
        handle.write('{"type": "message", "content": "written by a crashed try"}\n')
    while (await client.get_task(task.id)).status != "finished":
        await one_step()

    lines = [json.loads(line) for line in (tmp_path / "c1.jsonl").read_text().splitlines()]
    assert [line["type"] for line in lines] == ["export"] + ["message"] * 5
    assert [line["content"] for line in lines[1:]] == [f"message {i}" for i in range(5)]
    assert not partial.exists()
