"""End to end: topic updates, then a group distillation, both through the OpenAI-compatible provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.config import Settings
from app.failures.models import JobFailure
from app.llm.models import LlmCall
from tests.integration.llm.conftest import START, openai_settings
from tests.support.fake_openai import FakeOpenAI, RecordedRequest, Reply, reply_json
from tests.support.workers import burst_worker

GROUP = "group-release"
CHATS = ("chat-a", "chat-b")


def model_answers(request: RecordedRequest) -> Reply:
    """Topics: one new topic per chat. Consensus: one fact resting on every topic it was shown."""
    if "consensus memory of a group" in request.system:
        refs = [line["ref"] for line in request.json_lines() if "ref" in line]
        change = {"action": "add", "kind": "decision", "statement": "发布改到周五。", "support": refs}
        return reply_json({"changes": [change]}, prompt_tokens=700, completion_tokens=40)
    topic = {
        "existing_id": None,
        "title": "周五发布",
        "summary": "决定周五发布。",
        "message_ids": request.message_ids(),
    }
    return reply_json({"topics": [topic]}, prompt_tokens=500, completion_tokens=30)


async def drain(settings: Settings) -> None:
    worker = burst_worker(settings, poll_delay=0.05)
    try:
        await worker.main()
    finally:
        await worker.close()


@pytest.fixture
async def llm_client(settings: Settings, fake_openai: FakeOpenAI) -> AsyncIterator[MemoryClient]:
    fake_openai.responder = model_answers
    async with MemoryClient(openai_settings(fake_openai)) as memory_client:
        for chat in CHATS:
            await memory_client.record_messages(
                [
                    {"chat_id": chat, "group_id": GROUP, "message_id": f"{chat}-{n}", "user_name": "王芳",
                     "content": f"我们周五发布吧（{n}）", "sent_at": START + timedelta(minutes=n)}
                    for n in range(2)
                ]
            )  # fmt: skip
            await memory_client.request_topic_update(chat)
        await drain(openai_settings(fake_openai))
        yield memory_client


async def calls(session_factory: async_sessionmaker[AsyncSession]) -> list[LlmCall]:
    async with session_factory() as session:
        return list((await session.scalars(select(LlmCall).order_by(LlmCall.id))).all())


async def test_a_distillation_over_llm_topics_is_stored_and_accounted_per_group(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await llm_client.request_group_distillation(GROUP)
    await drain(openai_settings(fake_openai))

    memory = await llm_client.get_group_memory(GROUP, history=True)
    [item] = memory.items
    assert (item.kind, item.statement) == ("decision", "发布改到周五。")
    assert sorted(item.support) == ["chat-a/t1", "chat-b/t1"]
    assert memory.history is not None and memory.history[0].producer == "openai:fake-model:prompts-v1"

    rows = await calls(session_factory)
    assert sorted((r.purpose, r.subject_kind, r.subject_id) for r in rows) == [
        ("consensus", "group", GROUP),
        ("topics", "chat", "chat-a"),
        ("topics", "chat", "chat-b"),
    ]
    group = await llm_client.llm_usage(group_id=GROUP)  # its distillation plus its chats' topic updates
    assert (group.calls, group.prompt_tokens, group.completion_tokens) == (3, 1700, 100)
    assert str(group.cost_usd) == "1.000000"  # 1.7k x 0.5 + 0.1k x 1.5
    assert (await llm_client.llm_usage(chat_id="chat-a")).calls == 1


async def test_a_rejected_distillation_call_is_recorded_as_a_failure_and_a_failed_call(
    fake_openai: FakeOpenAI, llm_client: MemoryClient, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await llm_client.request_group_distillation(GROUP)
    await drain(openai_settings(fake_openai, llm_api_key="sk-expired"))

    async with session_factory() as session:
        [failure] = (await session.scalars(select(JobFailure))).all()
    assert failure.error_type == "LlmRejected"
    assert failure.reason.startswith("LLM rejected the API key (401)")
    assert (await llm_client.get_group_memory(GROUP)).version == 0
    [failed] = [r for r in await calls(session_factory) if r.purpose == "consensus"]
    assert (failed.ok, failed.subject_id, failed.prompt_tokens) == (False, GROUP, 0)
    assert failed.error is not None and "401" in failed.error
    group = await llm_client.llm_usage(group_id=GROUP)
    assert (group.calls, group.failed_calls) == (3, 1)
