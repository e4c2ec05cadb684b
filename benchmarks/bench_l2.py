"""L2 benchmark: recording rate, due-chat lookup, folding throughput and trigger latency.

    .venv/bin/python -m benchmarks.bench_l2 [--quick]

Uses its own database (BENCH_POSTGRES_DB, default memory_worker_bench_l2, recreated) and Redis db
(BENCH_REDIS_DB, default 11, flushed). Prints a table and writes benchmarks/results/l2.json.

- recording: `MemoryClient.record_message` one message per call, and `record_messages` with 1,000
  per call (100 chats x 10 messages, so every call also crosses the threshold of 100 chats).
  Targets >= 1,000/s single and >= 30,000/s batched.
- due-chat lookup among 1k/10k/100k chats, 5% due: one `ZRANGEBYSCORE` on our due index, beside
  the replaced design (SCAN over per-chat list keys, then LLEN + GET per key). Target >= 1,000x.
- folding: 10k chats x 10 messages recorded (10 = the threshold, so one update job per chat is
  queued), then drained by 1 and 2 real `arq` worker processes with the offline summarizer and the
  default settings (a job also folds up to L2_FOLD_BATCH_CHATS - 1 queued chats that have not
  started), beside the same number of no-op jobs drained by the same arq settings. The queue is
  parked while the workers start, so start-up is not timed. Reported: messages/s, chat updates/s,
  and the update jobs that actually ran (the rest were folded by them). Target: messages/s >= 5x
  no-op jobs/s.
- trigger latency: the message that crosses the threshold is recorded -> its version is committed
  (one worker running, polled every millisecond). Target p99 <= 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from arq.jobs import serialize_job

from app.client import MemoryClient
from app.config import Settings
from app.constants import L2_DUE_AT
from app.db.models import Base
from app.l2.redis_state import L2RedisState
from app.l2.schemas import NewMessage
from app.serialization import serialize
from benchmarks.common import bench_settings, percentile, recreate_database, redis_client
from benchmarks.l2_noop_worker import NOOP_JOB, READY_LINE
from tests.support.settings import settings_env

DEFAULT_DB = "memory_worker_bench_l2"
DEFAULT_REDIS_DB = 11
RESULTS = Path(__file__).resolve().parent / "results" / "l2.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PARKED_QUEUE = "bench:l2:parked"
LEGACY_QUEUE = "legacy:l2:queue:"
LEGACY_LAST = "legacy:l2:last:"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CALLERS = 16  # concurrent single-message callers, as the request handlers of a chat API


def _pg_url(settings: Settings) -> str:
    return settings.sqlalchemy_url.replace("postgresql+asyncpg", "postgresql", 1)


async def reset(settings: Settings, *, recreate: bool = False) -> None:
    """Empty the bench database (recreated, schema from the models, stamped at head) and Redis db."""
    if recreate:
        await recreate_database(settings)
    else:
        connection = await asyncpg.connect(_pg_url(settings))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await connection.execute("VACUUM ANALYZE")
        await connection.close()
    redis = redis_client(settings)
    await redis.flushdb()
    await redis.aclose()


def _messages(chats: range, per_chat: int, prefix: str = "chat", start: int = 0) -> list[NewMessage]:
    return [
        NewMessage(
            chat_id=f"{prefix}-{c}",
            message_id=f"m{start + n}",
            content=f"message {n} about the deploy of service {c % 97} and the billing migration",
            sent_at=T0 + timedelta(seconds=n),
            user_id=f"user-{n % 4}",
        )
        for c in chats
        for n in range(per_chat)
    ]


# --- recording ------------------------------------------------------------------------------------


async def bench_recording(settings: Settings, single: int, batches: int) -> dict[str, Any]:
    await reset(settings)
    async with MemoryClient(settings) as client:
        for n in range(50):  # warm the pools
            await client.record_message("warm", f"w{n}", "warm up", sent_at=T0)
        started = time.perf_counter()
        for n in range(single):
            await client.record_message(
                f"single-{n % 500}", f"m{n}", "a message recorded on its own", sent_at=T0
            )
        single_seconds = time.perf_counter() - started

        async def caller(index: int, count: int) -> None:  # one request handler of a chat API
            for n in range(count):
                await client.record_message(
                    f"conc-{(index * count + n) % 500}",
                    f"c{index}-{n}",
                    "a message recorded on its own",
                    sent_at=T0,
                )

        started = time.perf_counter()
        await asyncio.gather(*(caller(index, single // CALLERS) for index in range(CALLERS)))
        concurrent_seconds = time.perf_counter() - started
        payloads = [_messages(range(b * 100, (b + 1) * 100), 10, prefix="batch") for b in range(batches)]
        started = time.perf_counter()
        enqueued = 0
        for payload in payloads:
            enqueued += len((await client.record_messages(payload)).enqueued_job_ids)
        batch_seconds = time.perf_counter() - started
    return {
        "single_messages": single,
        "single_per_second": round(single / single_seconds),
        "single_concurrent_callers": CALLERS,
        "single_concurrent_per_second": round(single // CALLERS * CALLERS / concurrent_seconds),
        "batched_messages": batches * 1000,
        "batched_per_second": round(batches * 1000 / batch_seconds),
        "batched_jobs_enqueued": enqueued,
    }


# --- due-chat lookup ------------------------------------------------------------------------------


async def bench_lookup(settings: Settings, chats: int) -> dict[str, Any]:
    """Same chats, same 5% due, in both layouts; each lookup must find exactly the due chats."""
    await reset(settings)
    redis = redis_client(settings)
    now = time.time()
    force = settings.l2_force_update_after_minutes * 60
    due_every = 20  # 5%
    for start in range(0, chats, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for c in range(start, min(start + 5000, chats)):
                due = c % due_every == 0
                pipe.zadd(L2_DUE_AT, {f"chat-{c}": now - 10 if due else now + 600})
                pipe.rpush(f"{LEGACY_QUEUE}chat-{c}", *([b"m"] * 3))
                pipe.set(f"{LEGACY_LAST}chat-{c}", now - (force + 10 if due else 60))
            await pipe.execute()
    expected = chats // due_every
    state = L2RedisState(redis, settings)
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        found = await state.due_chats(datetime.fromtimestamp(now, UTC), 0, chats)
        timings.append(time.perf_counter() - started)
        assert len(found) == expected, (len(found), expected)
    started = time.perf_counter()
    legacy_due = 0
    async for key in redis.scan_iter(match=f"{LEGACY_QUEUE}*"):
        chat = key.decode().removeprefix(LEGACY_QUEUE)
        length = await redis.llen(key)  # type: ignore[misc]
        last = await redis.get(f"{LEGACY_LAST}{chat}")
        if length >= settings.l2_queue_trigger_threshold or (last and now - float(last) >= force):
            legacy_due += 1
    legacy_seconds = time.perf_counter() - started
    assert legacy_due == expected, (legacy_due, expected)
    await redis.flushdb()
    await redis.aclose()
    ours = statistics.median(timings)
    return {
        "chats": chats,
        "due": expected,
        "zset_ms": round(ours * 1000, 3),
        "scan_llen_get_ms": round(legacy_seconds * 1000, 1),
        "ratio": round(legacy_seconds / ours),
    }


# --- folding throughput ---------------------------------------------------------------------------


class Proc:
    """A worker process whose output is read in a thread, to see its "started" line."""

    def __init__(self, target: str, env: dict[str, str], ready: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "arq", target],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.ready = threading.Event()
        self.tail: list[str] = []
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()

    def _read(self, ready: str) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.tail = (self.tail + [line])[-20:]
            if ready in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(60):
            raise RuntimeError("worker did not start:\n" + "".join(self.tail))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _worker_env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    env.update(
        L2_QUEUE_TRIGGER_THRESHOLD=str(settings.l2_queue_trigger_threshold),
        PYTHONUNBUFFERED="1",
    )
    return env


async def _drain(settings: Settings, workers: int, target: str, ready: str) -> float:
    """Park the queue, start `workers` processes, release the queue, time until it is empty."""
    redis = redis_client(settings)
    queue = settings.arq_queue_name
    await redis.rename(queue, PARKED_QUEUE)
    processes = [Proc(target, _worker_env(settings), ready) for _ in range(workers)]
    try:
        for process in processes:
            await asyncio.to_thread(process.wait_ready)
        await asyncio.sleep(0.5)  # let start-up hooks finish their own queries
        started = time.perf_counter()
        await redis.rename(PARKED_QUEUE, queue)
        while await redis.zcard(queue):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.stop()
        await redis.aclose()
    return elapsed


async def bench_folding(settings: Settings, chats: int, workers: int) -> dict[str, Any]:
    await reset(settings)
    per_chat = settings.l2_queue_trigger_threshold
    async with MemoryClient(settings) as client:
        enqueued = 0
        for start in range(0, chats, 100):
            result = await client.record_messages(_messages(range(start, min(start + 100, chats)), per_chat))
            enqueued += len(result.enqueued_job_ids)
    assert enqueued == chats, (enqueued, chats)
    elapsed = await _drain(settings, workers, "app.workers.unified_worker.UnifiedWorkerSettings", " started")
    connection = await asyncpg.connect(_pg_url(settings))
    pending = await connection.fetchval("SELECT count(*) FROM chat_messages WHERE topic_version_id IS NULL")
    versions = await connection.fetchval("SELECT count(*) FROM topic_memory_versions")
    jobs = await connection.fetchval("SELECT count(DISTINCT job_id) FROM topic_memory_versions")
    await connection.close()
    assert pending == 0 and versions == chats, (pending, versions)
    messages = chats * per_chat
    return {
        "workers": workers,
        "chats": chats,
        "messages": messages,
        "fold_batch_chats": settings.fold_batch_chats,
        "jobs_run": jobs,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(messages / elapsed),
        "chat_updates_per_second": round(chats / elapsed),
        "jobs_per_second": round(jobs / elapsed),
    }


async def bench_noop(settings: Settings, jobs: int, workers: int) -> dict[str, Any]:
    await reset(settings)
    redis = redis_client(settings)
    now_ms = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(jobs):
            job_id = f"noop-{n}"
            pipe.psetex(
                f"arq:job:{job_id}",
                86_400_000,
                serialize_job(NOOP_JOB, (f"chat-{n}",), {}, None, now_ms, serializer=serialize),
            )
            pipe.zadd(settings.arq_queue_name, {job_id: now_ms})
        await pipe.execute()
    await redis.aclose()
    elapsed = await _drain(settings, workers, "benchmarks.l2_noop_worker.NoopWorkerSettings", READY_LINE)
    return {
        "workers": workers,
        "jobs": jobs,
        "seconds": round(elapsed, 3),
        "jobs_per_second": round(jobs / elapsed),
    }


# --- trigger latency ------------------------------------------------------------------------------


async def bench_latency(settings: Settings, samples: int) -> dict[str, Any]:
    await reset(settings)
    threshold = settings.l2_queue_trigger_threshold
    worker = Proc("app.workers.unified_worker.UnifiedWorkerSettings", _worker_env(settings), " started")
    timings: list[float] = []
    try:
        await asyncio.to_thread(worker.wait_ready)
        connection = await asyncpg.connect(_pg_url(settings))
        async with MemoryClient(settings) as client:
            for n in range(samples + 5):
                chat = f"latency-{n}"
                await client.record_messages(_messages(range(n, n + 1), threshold - 1, prefix="latency"))
                started = time.perf_counter()
                result = await client.record_message(chat, "crossing", "the message that crosses", sent_at=T0)
                assert len(result.enqueued_job_ids) == 1
                while not await connection.fetchval(
                    "SELECT version FROM topic_memories WHERE chat_id = $1", chat
                ):
                    await asyncio.sleep(0.001)
                if n >= 5:  # the first few warm the worker
                    timings.append((time.perf_counter() - started) * 1000)
        await connection.close()
    finally:
        worker.stop()
    return {
        "samples": samples,
        "p50_ms": round(percentile(timings, 0.5), 1),
        "p99_ms": round(percentile(timings, 0.99), 1),
        "poll_delay_s": settings.worker_poll_delay_seconds,
    }


# --- report ---------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rec, latency = results["recording"], results["latency"]
    rows = [
        ("record, 1 per call (msg/s)", f"{rec['single_per_second']:,}", "one caller; target >= 1,000"),
        (
            "record, 1 per call (msg/s)",
            f"{rec['single_concurrent_per_second']:,}",
            f"{rec['single_concurrent_callers']} concurrent callers",
        ),
        ("record, 1,000 per call (msg/s)", f"{rec['batched_per_second']:,}", "target >= 30,000"),
    ]
    for lookup in results["lookup"]:
        rows.append(
            (
                f"due lookup, {lookup['chats']:,} chats (ms)",
                f"{lookup['zset_ms']:.2f}",
                f"SCAN+LLEN+GET {lookup['scan_llen_get_ms']:,.0f} ms: {lookup['ratio']:,}x "
                "(target >= 1,000x at 100k)",
            )
        )
    for fold, noop in zip(results["folding"], results["noop"], strict=True):
        ratio = fold["messages_per_second"] / noop["jobs_per_second"]
        rows.append(
            (
                f"folding, {fold['workers']} worker(s) (msg/s)",
                f"{fold['messages_per_second']:,}",
                f"{fold['chat_updates_per_second']:,} chat updates/s by {fold['jobs_run']:,} jobs "
                f"({fold['jobs_per_second']:,} jobs/s); no-op drain {noop['jobs_per_second']:,} jobs/s: "
                f"{ratio:.1f}x (target >= 5x)",
            )
        )
    rows.append(("trigger latency p50 (ms)", f"{latency['p50_ms']:.1f}", f"{latency['samples']} samples"))
    rows.append(("trigger latency p99 (ms)", f"{latency['p99_ms']:.1f}", "target <= 250 ms"))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'metric'.ljust(width)}  {'value':>9}  notes", "-" * (width + 60)]
    lines += [f"{name.ljust(width)}  {value:>9}  {note}" for name, value, note in rows]
    return "\n".join(lines)


async def main(quick: bool) -> None:
    settings = bench_settings(DEFAULT_DB, DEFAULT_REDIS_DB)
    await reset(settings, recreate=True)
    results: dict[str, Any] = {"quick": quick}
    results["recording"] = await bench_recording(settings, 300 if quick else 3000, 5 if quick else 50)
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    results["lookup"] = [await bench_lookup(settings, size) for size in sizes]
    chats = 1_000 if quick else 10_000
    results["folding"], results["noop"] = [], []
    for workers in (1, 2):
        results["folding"].append(await bench_folding(settings, chats, workers))
        results["noop"].append(await bench_noop(settings, chats, workers))
    results["latency"] = await bench_latency(settings, 30 if quick else 200)
    await reset(settings)
    sys.stdout.write(table(results) + "\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(f"wrote {RESULTS}\n")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run of a minute or so)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.quick))


if __name__ == "__main__":
    cli()
