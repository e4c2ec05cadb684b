"""A batch of chats folded by one update job with a remote model: a chat whose model call fails
goes back to the queue with its own job (which fails visibly), and costs the others nothing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.client import MemoryClient
from app.constants import JOB_UPDATE_TOPIC_MEMORY, L2_QUEUED_PREFIX
from app.llm.models import LlmCall
from tests.integration.llm.conftest import openai_settings
from tests.support.fake_openai import FakeOpenAI, RecordedRequest, Reply, reply_error, reply_json
from tests.support.l2 import assert_exactly_once, drain, msg, pending_ids, versions

THRESHOLD = 3
CHATS = ["chat-a", "chat-b", "chat-c"]


def _poisoned(request: RecordedRequest) -> Reply:
    """A model that rejects chat-b's messages (a 400 is a permanent failure) and folds the others."""
    if "poison" in request.user:
        return reply_error(400, "this prompt is not allowed")
    ids = request.message_ids()
    topic = {"existing_id": None, "title": "Deploy", "summary": "s", "message_ids": ids}
    return reply_json({"topics": [topic]}, prompt_tokens=100, completion_tokens=10)


async def test_a_failed_model_call_of_a_taken_chat_costs_the_others_nothing(
    fake_openai: FakeOpenAI, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    fake_openai.responder = _poisoned
    settings = openai_settings(fake_openai, l2_queue_trigger_threshold=THRESHOLD, l2_fold_batch_chats=10)
    async with MemoryClient(settings) as client:
        await client.record_messages(
            [msg(chat, n, "poison" if chat == "chat-b" else None) for chat in CHATS for n in range(THRESHOLD)]
        )
        job_a = await client.redis.get(L2_QUEUED_PREFIX + "chat-a")
        queue = settings.arq_queue_name
        await client.redis.zadd(queue, {job_a: await client.redis.zscore(queue, job_a) - 1000})  # runs first
        worker = await drain(settings, max_jobs=1)
        # chat-a's job folded chat-a and chat-c; chat-b went back to the queue, and its own job failed
        assert (worker.jobs_complete, worker.jobs_failed) == (1, 1)
        assert {(await versions(session_factory, c))[0].job_id for c in ("chat-a", "chat-c")} == {
            (await versions(session_factory, "chat-a"))[0].job_id
        }
        for chat in ("chat-a", "chat-c"):
            await assert_exactly_once(session_factory, chat)
        assert len(await pending_ids(session_factory, "chat-b")) == THRESHOLD
        (failure,) = await client.list_failures(subject_kind="chat", subject_id="chat-b")
        assert (failure.function, failure.error_type) == (JOB_UPDATE_TOPIC_MEMORY, "LlmRejected")
        assert "400" in failure.reason
    async with session_factory() as session:
        failed_calls = (await session.scalars(select(LlmCall).where(LlmCall.ok.is_(False)))).all()
    assert [call.subject_id for call in failed_calls] == ["chat-b", "chat-b"]  # in the batch, in its job
