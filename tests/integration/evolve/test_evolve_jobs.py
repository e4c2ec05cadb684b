"""`task_evolve_memory` through arq and a burst worker: manual trigger and reading the result,
faults between the model call and the commit (nothing partial, one version in the end)."""

from __future__ import annotations

from typing import Any

from arq.jobs import Job, JobStatus
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import JOB_EVOLVE_MEMORY
from app.errors import TransientError, ValidationError
from app.failures.repository import list_failures
from app.llm.base import ConsensusItem, ConsensusUpdate, TopicSource
from app.llm.offline import OfflineMemoryModel
from app.serialization import deserialize
from tests.support.evolve import (
    ConnectionKillingModel,
    OverflowingUsageModel,
    add_topic_version,
    asyncpg_url,
    count_rows,
    make_topic,
    run_burst_worker,
    versions_of,
)

NOTHING_WRITTEN = {"memories": 0, "versions": 0, "cursors": 0, "days": 0, "usage": 0}


async def drain(settings: Settings, model: Any = None) -> tuple[int, int]:
    """Run a burst worker (optionally with another memory model) until the queue is empty."""
    worker = await run_burst_worker(settings, model=model)
    return worker.jobs_complete, worker.jobs_failed


async def test_manual_trigger_distils_and_the_client_reads_items_and_history(
    settings: Settings, client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(
        session_factory,
        "team-1",
        "chat-a",
        [make_topic("t1", ["We will use Postgres for storage", "Bob likes tea"])],
    )
    job_id = await client.request_group_distillation("team-1")
    assert await drain(settings) == (1, 0)
    result = await Job(job_id, client.redis, _deserializer=deserialize).result(timeout=1)
    assert (result["outcome"], result["version"], result["added"], result["trigger"]) == (
        "distilled",
        1,
        2,
        "manual",
    )

    await add_topic_version(
        session_factory,
        "team-1",
        "chat-a",
        [make_topic("t1", ["We will use MySQL for storage", "Bob likes tea"])],
    )
    await client.enqueue(JOB_EVOLVE_MEMORY, "team-1")  # what a service does with arq directly
    assert await drain(settings) == (1, 0)

    memory = await client.get_group_memory("team-1")
    assert memory.version == 2 and memory.history is None
    assert [(item.id, item.kind, item.statement) for item in memory.items] == [
        ("c1", "decision", "We will use MySQL for storage"),
        ("c2", "preference", "Bob likes tea"),
    ]
    with_history = await client.get_group_memory("team-1", history=True)
    assert with_history.history_total == 2 and with_history.history is not None
    newest, oldest = with_history.history
    assert [(d.op, d.item_id) for d in oldest.diff] == [("added", "c1"), ("added", "c2")]
    [update] = newest.diff
    assert (update.op, update.item_id, update.statement) == ("updated", "c1", "We will use MySQL for storage")
    assert update.before is not None and update.before.statement == "We will use Postgres for storage"
    assert "superseded" in update.reason
    assert newest.producer == "offline" and newest.trigger == "manual" and newest.job_id is not None


async def test_unknown_group_reads_as_empty_and_bad_ids_are_refused(client: MemoryClient) -> None:
    memory = await client.get_group_memory("never-seen", history=True)
    assert (memory.version, memory.items, memory.history, memory.history_total) == (0, [], [], 0)
    try:
        await client.get_group_memory("")
    except ValidationError as exc:
        assert str(exc) == "group_id: must be a non-empty string"
    else:
        raise AssertionError("an empty group id was accepted")


async def test_group_without_topic_memory_completes_with_nothing_to_distil(
    settings: Settings, client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    job = await client.enqueue(JOB_EVOLVE_MEMORY, "quiet-group")
    assert job is not None
    assert await drain(settings) == (1, 0)
    assert await job.status() == JobStatus.complete
    assert (await job.result(timeout=1))["outcome"] == "nothing to distil"
    assert await count_rows(session_factory) == NOTHING_WRITTEN
    assert await client.list_failures() == []


async def test_connection_lost_between_model_and_commit_leaves_nothing_then_the_retry_writes_one_version(
    settings: Settings, client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We decided to use Postgres"])]
    )
    model = ConnectionKillingModel(database_url=asyncpg_url(settings))
    job = await client.enqueue(JOB_EVOLVE_MEMORY, "g1")
    assert job is not None

    assert await drain(settings, model) == (1, 0)  # the first try's commit failed; arq retried it

    assert model.killed == 1
    info = await job.result_info()
    assert info is not None and info.job_try == 2 and info.result["outcome"] == "distilled"
    [version] = await versions_of(session_factory, "g1")
    assert version.version == 1 and len(version.items) == 1
    assert (await count_rows(session_factory))["usage"] == 1


async def test_fault_after_the_model_answered_rolls_back_everything_and_a_rerun_distils_once(
    settings: Settings, client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(
        session_factory, "g1", "chat-a", [make_topic("t1", ["We decided to use Postgres"])]
    )
    job = await client.enqueue(JOB_EVOLVE_MEMORY, "g1")
    assert job is not None
    assert await drain(settings, OverflowingUsageModel()) == (0, 1)

    assert await count_rows(session_factory) == NOTHING_WRITTEN
    async with session_factory() as session:
        [failure] = await list_failures(session, subject_kind="group", subject_id="g1")
    assert failure.function == JOB_EVOLVE_MEMORY and "numeric field overflow" in failure.reason

    await client.enqueue(JOB_EVOLVE_MEMORY, "g1")
    await client.enqueue(JOB_EVOLVE_MEMORY, "g1")
    assert await drain(settings) == (2, 0)
    assert [v.version for v in await versions_of(session_factory, "g1")] == [1]


class FlakyModel(OfflineMemoryModel):
    """Times out on its first call (as the OpenAI provider raises for a 503), then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def distil_consensus(
        self, group_id: str, previous: list[ConsensusItem], sources: list[TopicSource]
    ) -> ConsensusUpdate:
        self.calls += 1
        if self.calls == 1:
            raise TransientError("model endpoint unavailable (503)")
        return await super().distil_consensus(group_id, previous, sources)


async def test_transient_model_error_is_retried_with_nothing_partial_in_between(
    settings: Settings, client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await add_topic_version(session_factory, "g1", "chat-a", [make_topic("t1", ["Bob likes tea"])])
    model = FlakyModel()
    await client.enqueue(JOB_EVOLVE_MEMORY, "g1")
    assert await drain(settings, model) == (1, 0)
    assert model.calls == 2
    assert [v.version for v in await versions_of(session_factory, "g1")] == [1]
    assert await client.list_failures() == []
