"""Long-task benchmark: claim latency on a large table, and steps per second with one and two workers.

    .venv/bin/python -m benchmarks.bench_tasks [--quick]

Uses its own database (BENCH_POSTGRES_DB, default memory_worker_bench_tasks, recreated) and Redis db
(BENCH_REDIS_DB, default 12). Prints a table and writes benchmarks/results/tasks.json.

- claim latency: one claim (`SELECT ... FOR UPDATE SKIP LOCKED` of a batch + the lease UPDATE, one
  autocommit statement) through the engine's own code and connection, on a table of 100,000 due
  tasks; the claimed tasks are then finished (untimed), as a worker would. Target p99 <= 2 ms.
  The same SQL on a bare asyncpg connection is reported next to it (the database's share).
- steps per second: tasks of ten trivial steps run by 1 and 2 worker processes, each running the
  engine's `run_due_tasks` (what the arq job runs, without arq's queue). Target >= 500/s with one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text

from app.config import Settings
from app.context import utc_now
from app.db.engine import create_engine, create_session_factory
from app.tasks.channel import StatementChannel
from app.tasks.engine import claim, run_due_tasks
from app.tasks.registry import FINISHED, State, TaskRegistry, TaskType
from app.tasks.step import StepContext, TaskDeps
from benchmarks.common import bench_settings, percentile, recreate_database

DEFAULT_DB = "memory_worker_bench_tasks"
DEFAULT_REDIS_DB = 12
RESULTS = Path(__file__).resolve().parent / "results" / "tasks.json"
STEPS_PER_TASK = 10


class NoInput(BaseModel):
    pass


async def trivial(ctx: StepContext) -> str:
    index = int(ctx.state[1:])
    return f"s{index + 1}" if index + 1 < STEPS_PER_TASK else FINISHED


BENCH_TYPE = TaskType(
    name="bench_trivial",
    input_model=NoInput,
    initial="s0",
    states={
        f"s{i}": State(trivial, (f"s{i + 1}" if i + 1 < STEPS_PER_TASK else FINISHED,))
        for i in range(STEPS_PER_TASK)
    },
    max_state_visits=1,
)


def bench_settings_for_tasks() -> Settings:
    return bench_settings(DEFAULT_DB, DEFAULT_REDIS_DB)


async def fill(settings: Settings, count: int, task_type: str, initial: str) -> None:
    """`count` due tasks, priorities 0-9, created in one statement, then ANALYZEd."""
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE long_tasks RESTART IDENTITY"))
        await conn.execute(
            text(
                "INSERT INTO long_tasks (task_type, state, state_visits, priority, next_run_at) "
                "SELECT CAST(:type AS text), CAST(:state AS text), "
                "jsonb_build_object(CAST(:state AS text), 1), (g % 10), now() - interval '1 second' "
                "FROM generate_series(1, CAST(:count AS integer)) AS g"
            ),
            {"type": task_type, "state": initial, "count": count},
        )
    async with engine.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("VACUUM ANALYZE long_tasks"))
    await engine.dispose()


async def bench_claim(settings: Settings, table_size: int, claims: int) -> dict[str, Any]:
    await fill(settings, table_size, "bench_trivial", "s0")
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    deps = TaskDeps(settings=settings, session_factory=factory, clock=utc_now, worker_id="bench:0:claim")
    batch = settings.long_task_poll_batch_size
    timings: list[float] = []
    async with StatementChannel(deps) as channel:  # as a worker's run claims: one held connection
        for _ in range(20):  # warm the connection and the statement caches
            await claim(deps, "warm", batch, channel)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE long_tasks SET lease_owner = NULL, lease_expires_at = NULL"))
        for _ in range(claims):
            started = time.perf_counter()
            claimed = await claim(deps, "bench", batch, channel)
            timings.append((time.perf_counter() - started) * 1000)
            assert len(claimed) == batch
            async with factory.begin() as session:  # the worker finishes them: they leave the claimable set
                await session.execute(
                    text(
                        "UPDATE long_tasks SET status = 'finished', lease_owner = NULL WHERE id = ANY(:ids)"
                    ),
                    {"ids": [task.id for task in claimed]},
                )
    await engine.dispose()
    return {
        "table_size": table_size,
        "batch": batch,
        "claims": claims,
        "p50_ms": round(percentile(timings, 0.50), 3),
        "p99_ms": round(percentile(timings, 0.99), 3),
        "mean_ms": round(statistics.fmean(timings), 3),
    }


RAW_CLAIM = """
WITH picked AS (
    SELECT id FROM long_tasks
    WHERE status IN ('queued', 'running') AND next_run_at <= $1
      AND (lease_expires_at IS NULL OR lease_expires_at <= $1)
    ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED
)
UPDATE long_tasks t SET lease_owner = 'raw', lease_expires_at = $2, status = 'running', updated_at = now()
FROM picked WHERE t.id = picked.id RETURNING t.*
"""


async def bench_claim_sql(settings: Settings, claims: int) -> dict[str, Any]:
    """The same claim statement on a bare asyncpg connection: the database's share of the latency."""
    import asyncpg

    connection = await asyncpg.connect(settings.sqlalchemy_url.replace("postgresql+asyncpg", "postgresql", 1))
    batch = settings.long_task_poll_batch_size
    timings: list[float] = []
    try:
        for index in range(claims + 20):
            now = utc_now()
            started = time.perf_counter()
            rows = await connection.fetch(RAW_CLAIM, now, now, batch)
            if index >= 20:
                timings.append((time.perf_counter() - started) * 1000)
            await connection.execute(
                "UPDATE long_tasks SET status = 'finished' WHERE id = ANY($1)", [row["id"] for row in rows]
            )
    finally:
        await connection.close()
    return {"p50_ms": round(percentile(timings, 0.50), 3), "p99_ms": round(percentile(timings, 0.99), 3)}


async def bench_steps(settings: Settings, workers: int, tasks: int) -> dict[str, Any]:
    await fill(settings, tasks, "bench_trivial", "s0")
    env = {**os.environ, "BENCH_POSTGRES_DB": settings.postgres_db, "BENCH_REDIS_DB": str(settings.redis_db)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_tasks", "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(workers)
    ]
    for process in processes:  # each prints "ready" once connected, so start-up is not timed
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    reports = [json.loads(process.communicate(timeout=600)[0]) for process in processes]
    elapsed = time.perf_counter() - started
    engine = create_engine(settings)
    async with engine.connect() as conn:
        finished = (
            await conn.execute(text("SELECT count(*) FROM long_tasks WHERE status = 'finished'"))
        ).scalar()
    await engine.dispose()
    steps = sum(report["steps"] for report in reports)
    assert finished == tasks and steps == tasks * STEPS_PER_TASK, (finished, steps)
    return {
        "workers": workers,
        "tasks": tasks,
        "steps": steps,
        "seconds": round(elapsed, 3),
        "steps_per_second": round(steps / elapsed, 1),
    }


async def worker_main() -> None:
    """One benchmark worker process: wait for "go", run due tasks until none is left, report."""
    settings = bench_settings_for_tasks()
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    registry = TaskRegistry()
    registry.register(BENCH_TYPE)
    deps = TaskDeps(
        settings=settings, session_factory=factory, clock=utc_now, worker_id=f"bench:{os.getpid()}:w"
    )
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.to_thread(sys.stdin.readline)
    summary = await run_due_tasks(deps, registry, budget_seconds=600)
    await engine.dispose()
    sys.stdout.write(json.dumps({"steps": summary.steps, "claimed": summary.claimed}) + "\n")


async def main(quick: bool) -> None:
    settings = bench_settings_for_tasks()
    await recreate_database(settings)
    claim_result = await bench_claim(settings, 100_000 if not quick else 20_000, 300 if quick else 2000)
    claim_result["sql_only"] = await bench_claim_sql(settings, 300 if quick else 2000)
    steps_tasks = 100 if quick else 400
    one = await bench_steps(settings, 1, steps_tasks)
    two = await bench_steps(settings, 2, steps_tasks)
    results = {"claim": claim_result, "steps": [one, two], "quick": quick}
    rows = [
        (
            "claim p50 (ms)",
            f"{claim_result['p50_ms']:.3f}",
            f"{claim_result['table_size']:,} tasks, batch {claim_result['batch']}",
        ),
        ("claim p99 (ms)", f"{claim_result['p99_ms']:.3f}", "target <= 2 ms"),
        (
            "claim SQL only p50 (ms)",
            f"{claim_result['sql_only']['p50_ms']:.3f}",
            "same statement, bare asyncpg",
        ),
        ("claim SQL only p99 (ms)", f"{claim_result['sql_only']['p99_ms']:.3f}", ""),
        (
            "steps/s, 1 worker",
            f"{one['steps_per_second']:.0f}",
            f"{one['steps']} trivial steps; target >= 500",
        ),
        ("steps/s, 2 workers", f"{two['steps_per_second']:.0f}", f"{two['steps']} trivial steps"),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'metric'.ljust(width)}  {'value':>9}  notes", "-" * (width + 40)]
    lines += [f"{name.ljust(width)}  {value:>9}  {note}" for name, value, note in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(
        f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}\n"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller table and fewer tasks (a smoke run)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    asyncio.run(worker_main() if arguments.worker else main(arguments.quick))


if __name__ == "__main__":
    cli()
