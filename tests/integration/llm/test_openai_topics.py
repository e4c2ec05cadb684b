"""The OpenAI-compatible provider rewriting topics against a real local chat-completions server.

Each test states what the server answered, then checks what the provider returned (the drafts a
service would store), what it sent (prompts, repairs, splitting), what it retried and what it
accounted (`Usage`, stored as `llm_calls` rows in the real database).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.errors import PermanentError, TransientError
from app.failures.guard import backoff_seconds
from app.llm.accounting import record_failed_usage, record_usage
from app.llm.errors import LlmAnswerInvalid, LlmInputTooLarge, LlmRejected, LlmUnavailable
from app.llm.models import LlmCall
from app.llm.openai_provider import OpenAICompatibleModel
from app.llm.tokens import TRUNCATION_MARKER, estimate_tokens
from tests.integration.llm.conftest import make_messages, make_topic, openai_settings
from tests.support.fake_openai import FakeOpenAI, RecordedRequest, Reply, reply_error, reply_json, reply_text

GOOD_ANSWER = {
    "topics": [
        {
            "existing_id": "t1",
            "title": "Release planning",
            "summary": "Release moves to Monday.",
            "key_points": ["ship on Monday"],
            "participants": ["Alice", "Bob"],
            "message_ids": [1],
        },
        {
            "existing_id": None,
            "title": "Deploy failure",
            "summary": "The deploy failed on a missing secret.",
            "key_points": [],
            "participants": ["Bob", "Alice"],
            "message_ids": [2, 3],
        },
    ]
}


def place_all(request: RecordedRequest) -> Reply:
    """A well-behaved model: keeps every shown topic, puts the new messages into the first one."""
    topic_ids = request.topic_ids()
    message_ids = request.message_ids()
    topics: list[dict[str, Any]] = [
        {"existing_id": topic_id, "title": f"kept {topic_id}", "summary": "s", "message_ids": []}
        for topic_id in topic_ids
    ]
    if topics:
        topics[0]["message_ids"] = message_ids
    else:
        topics.append({"existing_id": None, "title": "Deploy", "summary": "s", "message_ids": message_ids})
    return reply_json({"topics": topics}, prompt_tokens=100, completion_tokens=10)


async def stored_calls(session_factory: async_sessionmaker[AsyncSession]) -> list[LlmCall]:
    async with session_factory() as session:
        return list((await session.scalars(select(LlmCall).order_by(LlmCall.id))).all())


async def test_normal_answer_becomes_drafts_with_usage_and_cost(
    fake_openai: FakeOpenAI, session_factory: async_sessionmaker[AsyncSession], client: MemoryClient
) -> None:
    fake_openai.script(reply_json(GOOD_ANSWER, prompt_tokens=1200, completion_tokens=80))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        result = await model.rewrite_topics("chat-1", [make_topic("t1")], make_messages(3))
    finally:
        await model.aclose()

    assert [(d.existing_id, d.title, d.message_ids) for d in result.drafts] == [
        ("t1", "Release planning", [1]),
        (None, "Deploy failure", [2, 3]),
    ]
    [usage] = result.usage
    assert (usage.provider, usage.model, usage.ok) == ("openai", "fake-model", True)
    assert (usage.prompt_tokens, usage.completion_tokens) == (1200, 80)
    assert usage.cost_usd == Decimal("0.720000")  # 1.2k x $0.5 + 0.08k x $1.5

    [request] = fake_openai.requests
    assert request.body["model"] == "fake-model"
    assert request.body["response_format"] == {"type": "json_object"}
    assert request.body["temperature"] == pytest.approx(0.2)
    assert "Never invent an existing_id" in " ".join(request.system.split())
    lines = request.json_lines()
    assert lines[0]["id"] == "t1" and lines[0]["title"] == "Release planning"
    assert lines[1] == {
        "id": 1,
        "time": "2026-11-23 09:00",
        "author": "Alice",
        "role": "user",
        "text": "message number 1 about the deploy",
    }
    assert lines[2]["author"] == "Bob" and lines[2]["role"] == "assistant"

    async with session_factory.begin() as session:  # as the update job does, with its memory version
        await record_usage(
            session, result.usage, job_id="job-1", purpose="topics", subject_kind="chat", subject_id="chat-1"
        )
    [row] = await stored_calls(session_factory)
    assert (row.job_id, row.model, row.purpose, row.subject_id, row.ok) == (
        "job-1",
        "fake-model",
        "topics",
        "chat-1",
        True,
    )
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (1200, 80, Decimal("0.72"))
    totals = await client.llm_usage(chat_id="chat-1")
    assert (totals.calls, totals.failed_calls, totals.total_tokens, totals.cost_usd) == (
        1,
        0,
        1280,
        Decimal("0.72"),
    )
    assert (await client.llm_usage(job_id="job-1")).by_model["openai:fake-model"].calls == 1
    assert (await client.llm_usage(chat_id="another-chat")).calls == 0


async def test_malformed_json_then_a_good_answer_is_repaired_in_the_same_call(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(reply_text('{"topics": [{"existing_id": "t1", "title": '), reply_json(GOOD_ANSWER))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        result = await model.rewrite_topics("chat-1", [make_topic("t1")], make_messages(3))
    finally:
        await model.aclose()

    assert [d.message_ids for d in result.drafts] == [[1], [2, 3]]
    first, repair = fake_openai.requests
    assert repair.user == first.user  # the same data, then the bad answer and the problem
    assert repair.messages[-2] == {
        "role": "assistant",
        "content": '{"topics": [{"existing_id": "t1", "title": ',
    }
    assert "the answer is not valid JSON" in repair.last
    assert [(u.ok, (u.error or "")[:35]) for u in result.usage] == [
        (False, "invalid answer: the answer is not v"),
        (True, ""),
    ]


async def test_an_answer_cut_at_the_output_limit_is_named_as_such_in_the_repair(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(
        reply_text('{"topics": [{"existing_id": "t1"', finish_reason="length"), reply_json(GOOD_ANSWER)
    )
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        result = await model.rewrite_topics("chat-1", [make_topic("t1")], make_messages(3))
    finally:
        await model.aclose()
    repair = fake_openai.requests[1].last
    assert "- the answer was cut off at the output token limit: answer more concisely" in repair
    assert (result.usage[0].ok, len(result.drafts)) == (False, 2)


async def test_answer_invalid_twice_fails_permanently_keeping_the_raw_answer(
    fake_openai: FakeOpenAI, session_factory: async_sessionmaker[AsyncSession], client: MemoryClient
) -> None:
    invented = {"topics": [{"existing_id": "t99", "title": "x", "summary": "y", "message_ids": [1, 2]}]}
    missing_field = {"topics": [{"existing_id": "t1", "summary": "no title", "message_ids": [1, 2, 3]}]}
    fake_openai.script(reply_json(invented), reply_json(missing_field))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        with pytest.raises(LlmAnswerInvalid) as caught:
            await model.rewrite_topics("chat-1", [make_topic("t1")], make_messages(3))
    finally:
        await model.aclose()

    error = caught.value
    assert isinstance(error, PermanentError)
    assert json.loads(error.raw_answer) == missing_field  # the job failure keeps it in details["raw_answer"]
    assert "topics[0].title: Field required" in str(error)
    repair = fake_openai.requests[1].last
    assert "topics[0].existing_id 't99' is not a current topic (allowed: t1)" in repair
    assert "messages 3 are not placed in any topic" in repair
    assert len(fake_openai.requests) == 2  # one repair (LLM_MAX_RETRIES=1), then give up
    assert [u.ok for u in error.usage] == [False, False]

    stored = await record_failed_usage(
        session_factory, error, job_id="job-2", purpose="topics", subject_kind="chat", subject_id="chat-1"
    )
    assert stored == 2
    rows = await stored_calls(session_factory)
    assert [(r.job_id, r.ok, (r.error or "").startswith("invalid answer")) for r in rows] == [
        ("job-2", False, True),
        ("job-2", False, True),
    ]
    totals = await client.llm_usage(job_id="job-2")
    assert (totals.calls, totals.failed_calls) == (2, 2)
    assert totals.prompt_tokens > 0  # an invalid answer still costs its tokens


async def test_no_repair_when_llm_max_retries_is_zero(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_text("not json at all"))
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_max_retries=0))
    try:
        with pytest.raises(LlmAnswerInvalid) as caught:
            await model.rewrite_topics("chat-1", [], make_messages(2))
    finally:
        await model.aclose()
    assert caught.value.raw_answer == "not json at all"
    assert len(fake_openai.requests) == 1


async def test_429_is_transient_and_honours_retry_after(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_error(429, "Rate limit reached for requests", retry_after="7"))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        with pytest.raises(LlmUnavailable) as caught:
            await model.rewrite_topics("chat-1", [], make_messages(2))
    finally:
        await model.aclose()

    error = caught.value
    assert isinstance(error, TransientError)
    assert error.retry_after_seconds == 7
    assert "LLM unavailable (429); Retry-After 7 s: Rate limit reached for requests" in str(error)
    assert backoff_seconds(1, error.retry_after_seconds) == 7  # the job's next try waits for the server
    assert len(fake_openai.requests) == 1  # no retry inside the call: the job retries
    [usage] = error.usage
    assert (usage.ok, usage.prompt_tokens, usage.cost_usd) == (False, 0, Decimal("0"))
    assert usage.error is not None and "429" in usage.error


async def test_500_is_transient(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_error(500, "The server had an error while processing your request."))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        with pytest.raises(LlmUnavailable) as caught:
            await model.rewrite_topics("chat-1", [], make_messages(2))
    finally:
        await model.aclose()
    assert caught.value.retry_after_seconds is None
    assert "LLM unavailable (500)" in str(caught.value)
    assert len(fake_openai.requests) == 1


async def test_a_reply_slower_than_the_timeout_is_transient(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_json(GOOD_ANSWER, delay_seconds=10))
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_timeout_seconds=0.5))
    try:
        with pytest.raises(LlmUnavailable) as caught:
            await model.rewrite_topics("chat-1", [make_topic("t1")], make_messages(3))
    finally:
        await model.aclose()
    assert str(caught.value).startswith("LLM timed out after 0.5 s")
    [usage] = caught.value.usage
    assert 400 <= usage.latency_ms < 5000 and not usage.ok


async def test_unreachable_server_is_transient(fake_openai: FakeOpenAI) -> None:
    url = fake_openai.base_url
    fake_openai.close()  # nothing listens on that port any more
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_base_url=url))
    try:
        with pytest.raises(LlmUnavailable, match="cannot reach the LLM at http://127.0.0.1"):
            await model.rewrite_topics("chat-1", [], make_messages(1))
    finally:
        await model.aclose()


async def test_a_wrong_api_key_is_a_permanent_failure_with_a_clear_reason(fake_openai: FakeOpenAI) -> None:
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_api_key="sk-wrong"))
    try:
        with pytest.raises(LlmRejected) as caught:
            await model.rewrite_topics("chat-1", [], make_messages(2))
    finally:
        await model.aclose()
    error = caught.value
    assert isinstance(error, PermanentError) and not isinstance(error, TransientError)
    assert str(error) == "LLM rejected the API key (401): check LLM_API_KEY: Incorrect API key provided."
    assert error.status_code == 401
    assert fake_openai.requests[0].headers["authorization"] == "Bearer sk-wrong"
    assert "sk-wrong" not in str(error)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("<html><body>Open WebUI</body></html>", "text/html"), ('{"detail": "Not Found"}', "application/json")],
)
async def test_a_base_url_that_is_not_a_chat_completions_api_is_rejected(
    fake_openai: FakeOpenAI, body: str, content_type: str
) -> None:
    fake_openai.script(Reply(raw_body=body, content_type=content_type))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        with pytest.raises(LlmRejected, match="did not answer like a chat-completions API") as caught:
            await model.rewrite_topics("chat-1", [], make_messages(1))
    finally:
        await model.aclose()
    assert "check LLM_BASE_URL (it usually ends in /v1)" in str(caught.value)
    assert [u.ok for u in caught.value.usage] == [False]


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "LLM rejected the request (400): bad"),
        (403, "LLM refused access (403): the API key may not use LLM_MODEL=fake-model: bad"),
        (404, "LLM endpoint or model not found (404): check LLM_BASE_URL="),
        (422, "LLM rejected the request (422): bad"),
    ],
)
async def test_client_errors_are_permanent(fake_openai: FakeOpenAI, status: int, reason: str) -> None:
    fake_openai.script(reply_error(status, "bad"))
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        with pytest.raises(LlmRejected) as caught:
            await model.rewrite_topics("chat-1", [], make_messages(1))
    finally:
        await model.aclose()
    assert str(caught.value).startswith(reason)
    assert len(fake_openai.requests) == 1


async def test_an_oversize_backlog_is_split_over_sequential_calls_never_cut(fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = place_all
    settings = openai_settings(fake_openai, llm_max_input_tokens=1200)
    long_text = "x" * 4000 + " the end"
    messages = make_messages(40, text="message number {n}: we need to decide how the deploy pipeline retries")
    messages[5] = messages[5].model_copy(update={"content": long_text})
    model = OpenAICompatibleModel(settings)
    try:
        result = await model.rewrite_topics("chat-1", [make_topic("t1")], messages)
    finally:
        await model.aclose()

    requests = fake_openai.requests
    assert len(requests) >= 3
    sent = [request.message_ids() for request in requests]
    assert [message_id for ids in sent for message_id in ids] == [
        m.id for m in messages
    ]  # each once, in order
    for request in requests:  # every request within the budget left after the repair reserve
        assert estimate_tokens(request.system) + estimate_tokens(request.user) <= 1200 * 3 // 4
        assert request.topic_ids() == ["t1"]  # the folded topics carried into every next call
    assert "PART: these are new messages 1-" in requests[0].user
    long_line = next(line for line in requests[0].json_lines() if line.get("id") == 6)
    assert long_line["text"].startswith("xxxx") and "truncated" in long_line["text"]
    assert "the end" not in long_line["text"]
    assert TRUNCATION_MARKER.split("{")[0] in long_line["text"]
    assert requests[1].json_lines()[0]["title"] == "kept t1"  # chunk 2 sees chunk 1's result

    [draft] = result.drafts
    assert draft.existing_id == "t1" and draft.message_ids == [m.id for m in messages]
    assert len(result.usage) == len(requests) and all(u.ok for u in result.usage)


async def test_new_topics_proposed_in_an_earlier_chunk_get_no_invented_id(fake_openai: FakeOpenAI) -> None:
    fake_openai.responder = place_all  # chunk 1 proposes a new topic, later chunks extend it as "new-1"
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_max_input_tokens=1024))
    try:
        result = await model.rewrite_topics("chat-1", [], make_messages(30))
    finally:
        await model.aclose()
    assert len(fake_openai.requests) >= 2
    assert fake_openai.requests[1].topic_ids() == ["new-1"]
    [draft] = result.drafts
    assert draft.existing_id is None and draft.message_ids == list(range(1, 31))


async def test_a_chinese_chat_is_sent_readable_and_its_topics_kept(fake_openai: FakeOpenAI) -> None:
    answer = {
        "topics": [
            {
                "existing_id": None,
                "title": "周五发布计划",
                "summary": "张伟建议周五上线，李娜同意但要求先跑完回归测试。",
                "key_points": ["周五上线", "先跑回归测试"],
                "participants": ["张伟", "李娜"],
                "message_ids": [1, 2],
            }
        ]
    }
    fake_openai.script(reply_json(answer))
    messages = make_messages(2, author="张伟", text="我们周五部署新版本吧（消息{n}）")
    messages[1] = messages[1].model_copy(update={"author": "李娜", "content": "同意，但要先跑完回归测试。"})
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        result = await model.rewrite_topics("群聊-1", [], messages)
    finally:
        await model.aclose()

    [request] = fake_openai.requests
    assert "我们周五部署新版本吧（消息1）" in request.user  # raw characters, not \\u escapes
    assert '"author": "李娜"' in request.user
    assert "CHAT: 群聊-1" in request.user
    [draft] = result.drafts
    assert (draft.title, draft.participants, draft.message_ids) == ("周五发布计划", ["张伟", "李娜"], [1, 2])
    assert estimate_tokens("同意，但要先跑完回归测试。") == 13  # one token per CJK character


async def test_no_new_messages_means_no_call(fake_openai: FakeOpenAI) -> None:
    model = OpenAICompatibleModel(openai_settings(fake_openai))
    try:
        result = await model.rewrite_topics("chat-1", [make_topic("t1")], [])
    finally:
        await model.aclose()
    assert [d.existing_id for d in result.drafts] == ["t1"] and result.usage == []
    assert fake_openai.requests == []


async def test_topics_too_large_for_the_budget_fail_permanently_before_any_call(
    fake_openai: FakeOpenAI,
) -> None:
    topics = [make_topic(f"t{n}", title=f"A long topic title number {n}") for n in range(40)]
    model = OpenAICompatibleModel(openai_settings(fake_openai, llm_max_input_tokens=1024))
    try:
        with pytest.raises(LlmInputTooLarge, match="LLM_MAX_INPUT_TOKENS=1024; raise it"):
            await model.rewrite_topics("chat-1", topics, make_messages(1))
    finally:
        await model.aclose()
    assert fake_openai.requests == []
