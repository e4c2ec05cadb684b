"""End to end: the L2 update job in a burst worker with LLM_PROVIDER=openai, against the local server.

Each test records messages through the client, runs the worker, and checks what a user would: the
topic-memory version and its topics, whether the job was re-run (arq Retry), the `job_failures` row,
the messages still pending, and the `llm_calls` rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.constants import JOB_UPDATE_TOPIC_MEMORY
from app.failures.models import JobFailure
from app.llm.models import LlmCall
from tests.integration.llm.conftest import START, openai_settings
from tests.support.fake_openai import FakeOpenAI, RecordedRequest, Reply, reply_error, reply_json, reply_text
from tests.support.workers import burst_worker

CHAT = "chat-e2e"
GROUP = "group-e2e"


def new_topic(request: RecordedRequest) -> Reply:
    """A well-behaved model: keeps the shown topics, adds the new messages to the first or a new one."""
    shown = request.topic_ids()
    ids = request.message_ids()
    topics: list[dict[str, Any]] = [
        {"existing_id": ref, "title": "Deploy pipeline", "summary": "s", "message_ids": []} for ref in shown
    ]
    if topics:
        topics[0]["message_ids"] = ids
    else:
        topics = [
            {"existing_id": None, "title": "Deploy pipeline", "summary": "Retries.", "message_ids": ids}
        ]
    return reply_json({"topics": topics}, prompt_tokens=900, completion_tokens=60)


async def record(
    client: MemoryClient, count: int, text: str = "message {n}: the deploy pipeline retries"
) -> None:
    await client.record_messages(
        [
            {
                "chat_id": CHAT,
                "group_id": GROUP,
                "message_id": f"m{n}",
                "content": text.format(n=n),
                "sent_at": START + timedelta(minutes=n),
                "user_name": "Alice" if n % 2 else "Bob",
            }
            for n in range(1, count + 1)
        ]
    )


async def run_update(settings: Settings, client: MemoryClient) -> None:
    """Enqueue the chat's update (unless recording did) and drain the queue, retries included."""
    await client.request_topic_update(CHAT)
    worker = burst_worker(settings, poll_delay=0.05)  # a deferred retry is polled for, not spun on
    try:
        await worker.main()
    finally:
        await worker.close()


async def llm_rows(session_factory: async_sessionmaker[AsyncSession]) -> list[LlmCall]:
    async with session_factory() as session:
        return list((await session.scalars(select(LlmCall).order_by(LlmCall.id))).all())


async def failures(session_factory: async_sessionmaker[AsyncSession]) -> list[JobFailure]:
    async with session_factory() as session:
        return list((await session.scalars(select(JobFailure).order_by(JobFailure.id))).all())


@pytest.fixture
async def llm_client(settings: Settings, fake_openai: FakeOpenAI) -> AsyncIterator[MemoryClient]:
    async with MemoryClient(openai_settings(fake_openai)) as memory_client:
        yield memory_client


async def test_a_normal_answer_is_stored_as_a_version_with_its_accounting(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.responder = new_topic
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai), llm_client)

    memory = await llm_client.get_topic_memory(CHAT, history=True)
    assert (memory.version, memory.pending_count, memory.message_count) == (1, 0, 3)
    [topic] = memory.topics
    assert (topic.id, topic.title, topic.message_count) == ("t1", "Deploy pipeline", 3)  # the id is ours
    assert memory.history is not None
    [version] = memory.history
    assert version.summarizer == "openai:fake-model:prompts-v1" and version.job_try == 1

    [row] = await llm_rows(session_factory)
    assert (row.job_id, row.purpose, row.subject_id, row.ok) == (version.job_id, "topics", CHAT, True)
    assert (row.prompt_tokens, row.completion_tokens, str(row.cost_usd)) == (900, 60, "0.540000")
    by_group = await llm_client.llm_usage(group_id=GROUP)
    assert (by_group.calls, by_group.total_tokens, str(by_group.cost_usd)) == (1, 960, "0.540000")
    assert await failures(session_factory) == []


async def test_malformed_json_then_a_good_answer_stores_one_version_and_both_calls(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.script(reply_text("Here are your topics: {oops"))
    fake_openai.responder = new_topic
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai), llm_client)

    memory = await llm_client.get_topic_memory(CHAT, history=True)
    assert (memory.version, memory.pending_count) == (1, 0)
    assert memory.history is not None and memory.history[0].job_try == 1  # repaired within the same try
    assert len(fake_openai.requests) == 2
    rows = await llm_rows(session_factory)
    assert [(r.ok, (r.error or "")[:38]) for r in rows] == [
        (False, "invalid answer: the answer is not vali"),
        (True, ""),
    ]
    assert len({r.job_id for r in rows}) == 1


async def test_an_answer_invalid_twice_is_a_recorded_failure_with_the_raw_answer(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    invented = {"topics": [{"existing_id": "t42", "title": "x", "summary": "y", "message_ids": [1, 2, 3]}]}
    fake_openai.script(reply_json(invented), reply_json(invented))
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai), llm_client)

    memory = await llm_client.get_topic_memory(CHAT)
    assert (memory.version, memory.pending_count) == (0, 3)  # nothing lost: all still pending
    [failure] = await failures(session_factory)
    assert (failure.function, failure.error_type, failure.job_try) == (
        JOB_UPDATE_TOPIC_MEMORY,
        "LlmAnswerInvalid",
        1,
    )
    assert "'t42' is not a current topic" in failure.reason
    assert json.loads(failure.details["raw_answer"]) == invented
    assert len(fake_openai.requests) == 2  # one repair, no job retry for a permanent failure
    calls = await llm_rows(session_factory)  # both answered calls cost tokens and are accounted
    assert len(calls) == 2 and all(call.subject_id == CHAT for call in calls)


async def test_a_429_with_retry_after_reruns_the_job_after_that_delay(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.script(reply_error(429, "Rate limit reached", retry_after="2"))
    fake_openai.responder = new_topic
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai), llm_client)

    first, second = fake_openai.requests
    assert second.received_at - first.received_at >= 2.0  # Retry-After beat the 1 s first backoff
    memory = await llm_client.get_topic_memory(CHAT, history=True)
    assert (memory.version, memory.pending_count) == (1, 0)
    assert memory.history is not None and memory.history[0].job_try == 2  # arq re-ran the same job
    assert await failures(session_factory) == []
    assert [r.ok for r in await llm_rows(session_factory) if r.ok] == [True]


async def test_a_500_on_every_try_is_recorded_and_the_messages_stay_pending(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.responder = lambda request: reply_error(500, "upstream exploded")
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai, worker_max_tries=2), llm_client)

    assert len(fake_openai.requests) == 2  # try 1, then the arq retry
    [failure] = await failures(session_factory)
    assert (failure.error_type, failure.job_try) == ("LlmUnavailable", 2)
    assert failure.reason == "LLM unavailable (500): upstream exploded"
    assert [call.ok for call in await llm_rows(session_factory)] == [
        False,
        False,
    ]  # each failed try is visible
    memory = await llm_client.get_topic_memory(CHAT)
    assert (memory.version, memory.pending_count) == (0, 3)


async def test_a_timeout_is_transient_and_finally_recorded(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.script(Reply(content="{}", delay_seconds=10))
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai, llm_timeout_seconds=0.5, worker_max_tries=1), llm_client)

    [failure] = await failures(session_factory)
    assert failure.error_type == "LlmUnavailable"
    assert failure.reason.startswith("LLM timed out after 0.5 s")
    assert (await llm_client.get_topic_memory(CHAT)).pending_count == 3


async def test_a_rejected_api_key_fails_once_with_a_clear_reason(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await record(llm_client, 3)
    await run_update(openai_settings(fake_openai, llm_api_key="sk-revoked"), llm_client)

    [failure] = await failures(session_factory)
    assert (failure.error_type, failure.job_try) == ("LlmRejected", 1)  # permanent: no retry
    assert failure.reason.startswith("LLM rejected the API key (401)")
    assert "sk-revoked" not in failure.reason
    assert len(fake_openai.requests) == 1
    assert (await llm_client.get_topic_memory(CHAT)).pending_count == 3


async def test_an_oversize_backlog_is_folded_by_one_job_over_several_calls(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.responder = new_topic
    settings = openai_settings(fake_openai, llm_max_input_tokens=1200)
    await record(llm_client, 40, text="message {n}: " + "we should make the deploy pipeline retry " * 3)
    await run_update(settings, llm_client)

    sent = [request.message_ids() for request in fake_openai.requests]
    assert len(sent) >= 3
    memory = await llm_client.get_topic_memory(CHAT, history=True)
    assert memory.history is not None
    [version] = memory.history
    assert sorted(id_ for ids in sent for id_ in ids) == sorted(version.message_ids)  # each sent once
    assert (memory.version, memory.pending_count, len(version.message_ids)) == (1, 0, 40)
    rows = await llm_rows(session_factory)
    assert len(rows) == len(sent) and {r.job_id for r in rows} == {version.job_id}
    assert (await llm_client.llm_usage(job_id=version.job_id)).calls == len(sent)


async def test_a_chinese_chat_is_summarised_in_chinese(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    def chinese(request: RecordedRequest) -> Reply:
        ids = request.message_ids()
        return reply_json(
            {
                "topics": [
                    {
                        "existing_id": None,
                        "title": "发布流水线重试",
                        "summary": "大家同意给部署流水线加上自动重试。",
                        "key_points": ["最多重试三次"],
                        "participants": ["张伟", "李娜"],
                        "message_ids": ids,
                    }
                ]
            }
        )

    fake_openai.responder = chinese
    await llm_client.record_messages(
        [
            {
                "chat_id": CHAT,
                "group_id": GROUP,
                "message_id": "c1",
                "content": "部署流水线要不要加重试？",
                "sent_at": START,
                "user_name": "张伟",
            },
            {
                "chat_id": CHAT,
                "group_id": GROUP,
                "message_id": "c2",
                "content": "加吧，最多重试三次。",
                "sent_at": START + timedelta(minutes=1),
                "user_name": "李娜",
                "role": "assistant",
            },
        ]
    )
    await run_update(openai_settings(fake_openai), llm_client)

    [request] = fake_openai.requests
    assert '"author": "张伟", "role": "user", "text": "部署流水线要不要加重试？"' in request.user
    memory = await llm_client.get_topic_memory(CHAT)
    [topic] = memory.topics
    assert (topic.title, topic.key_points, topic.participants) == (
        "发布流水线重试",
        ["最多重试三次"],
        ["张伟", "李娜"],
    )
    assert memory.pending_count == 0
