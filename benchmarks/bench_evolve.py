"""Daily consensus benchmark: fan-out of the 02:00 cron, distillations per second, no-op reruns.

    .venv/bin/python -m benchmarks.bench_evolve [--quick]

Uses its own database (BENCH_POSTGRES_DB, default memory_worker_bench_evolve, recreated) and Redis
db (BENCH_REDIS_DB, default 3, flushed). Prints a table and writes benchmarks/results/evolve.json.

- fan-out: `fan_out_daily` for G changed groups (the changed-groups query over `topic_memories` and
  one arq enqueue per group with its deterministic job id).
- distil: `distil_group` with the offline model for every group, CONCURRENCY at a time (as a worker
  with WORKER_MAX_JOBS=20 would run them), each group having CHATS chats of 3 topics x 4 key points;
  groups/s and the per-run wall time p50/p95.
- no-op rerun: the same again with nothing new (lock, cursor check, rollback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arq import create_pool
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.engine import create_engine, create_session_factory
from app.evolve.daily import fan_out_daily
from app.evolve.service import OUTCOME_DISTILLED, OUTCOME_UNCHANGED, distil_group
from app.l2.models import TopicMemory, TopicMemoryVersion
from app.llm.base import Topic
from app.llm.offline import OfflineMemoryModel
from app.redis_settings import build_redis_settings
from app.serialization import deserialize, serialize
from benchmarks.common import bench_settings, percentile, recreate_database

DEFAULT_DB = "memory_worker_bench_evolve"
DEFAULT_REDIS_DB = 3
RESULTS = Path(__file__).resolve().parent / "results" / "evolve.json"
CHATS = 5
CONCURRENCY = 20
NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
POINTS = [
    "We decided to use {tool} for storage",
    "Alice prefers {tool} dashboards",
    "Deploys must always go through {tool} CI",
    "Which region should host {tool}?",
]


def topics(group: int, chat: int) -> list[dict[str, Any]]:
    return [
        Topic(
            id=f"t{n}",
            title=f"topic {n}",
            summary="A discussion. We agreed to review it on Monday.",
            key_points=[point.format(tool=f"tool-{group}-{chat}-{n}") for point in POINTS],
            first_message_at=NOW,
            last_message_at=NOW,
            message_count=10,
        ).model_dump(mode="json")
        for n in range(3)
    ]


async def seed(factory: async_sessionmaker[AsyncSession], groups: int) -> None:
    extra: dict[str, Any] = {"started_at": NOW} if "started_at" in TopicMemoryVersion.__table__.c else {}
    async with factory.begin() as session:
        for group in range(groups):
            for chat in range(CHATS):
                payload = topics(group, chat)
                chat_id, group_id = f"chat-{group}-{chat}", f"group-{group}"
                session.add(
                    TopicMemory(chat_id=chat_id, group_id=group_id, version=1, topics=payload, updated_at=NOW)
                )
                session.add(
                    TopicMemoryVersion(
                        chat_id=chat_id,
                        group_id=group_id,
                        version=1,
                        topics=payload,
                        message_ids=[],
                        message_count=10,
                        summarizer="bench",
                        duration_ms=0,
                        **extra,
                    )
                )


async def distil_all(factory: async_sessionmaker[AsyncSession], groups: int, expected: str) -> dict[str, Any]:
    model = OfflineMemoryModel()
    gate = asyncio.Semaphore(CONCURRENCY)
    timings: list[float] = []

    async def one(group: int) -> None:
        async with gate:
            started = time.perf_counter()
            result = await distil_group(factory, model, f"group-{group}", NOW, None)
            timings.append((time.perf_counter() - started) * 1000)
            assert result.outcome == expected, result

    started = time.perf_counter()
    await asyncio.gather(*(one(group) for group in range(groups)))
    elapsed = time.perf_counter() - started
    return {
        "groups": groups,
        "seconds": round(elapsed, 3),
        "groups_per_s": round(groups / elapsed, 1),
        "p50_ms": round(percentile(timings, 0.50), 1),
        "p95_ms": round(percentile(timings, 0.95), 1),
    }


async def main(quick: bool) -> None:
    groups = 50 if quick else 300
    settings = bench_settings(DEFAULT_DB, DEFAULT_REDIS_DB)
    await recreate_database(settings)
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    redis = await create_pool(
        build_redis_settings(settings), job_serializer=serialize, job_deserializer=deserialize
    )
    await redis.flushdb()
    try:
        await seed(factory, groups)
        started = time.perf_counter()
        fan_out = await fan_out_daily(factory, redis, settings, NOW, source="cron")
        fan_out_s = time.perf_counter() - started
        assert fan_out.enqueued == groups
        distil = await distil_all(factory, groups, OUTCOME_DISTILLED)
        noop = await distil_all(factory, groups, OUTCOME_UNCHANGED)
    finally:
        await redis.flushdb()
        await redis.aclose()
        await engine.dispose()
    results = {
        "groups": groups,
        "chats_per_group": CHATS,
        "concurrency": CONCURRENCY,
        "fan_out": {"seconds": round(fan_out_s, 3), "jobs": fan_out.enqueued},
        "distil": distil,
        "noop_rerun": noop,
    }
    rows = [
        ("fan-out (query + enqueue)", f"{groups} jobs", f"{fan_out_s * 1000:.0f} ms total", ""),
        (
            "distil (offline model)",
            f"{distil['groups_per_s']} groups/s",
            f"p50 {distil['p50_ms']} ms",
            f"p95 {distil['p95_ms']} ms",
        ),  # fmt: skip
        (
            "no-op rerun",
            f"{noop['groups_per_s']} groups/s",
            f"p50 {noop['p50_ms']} ms",
            f"p95 {noop['p95_ms']} ms",
        ),
    ]
    print(f"evolve benchmark: {groups} groups x {CHATS} chats, concurrency {CONCURRENCY}")
    for row in rows:
        print(f"  {row[0]:<28} {row[1]:>18} {row[2]:>18} {row[3]:>14}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="50 groups instead of 300")
    asyncio.run(main(parser.parse_args().quick))
