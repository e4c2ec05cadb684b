"""`rebuild_topic_memory`: re-fold a chat's whole history from scratch (e.g. after switching models),
in bounded steps, then swap the result in atomically.

    fold  (repeated)  fold the next `batch_size` messages into a staging memory kept in the task's
                      data; the live memory is untouched, and L2 updates go on meanwhile
    swap              one transaction holding the chat's row lock (as every L2 update does): fold
                      the few messages recorded since the last fold, write the staging topics as
                      the chat's next version, mark every still-pending message folded by it
    publish           reset the chat's L2 scheduling state in Redis (pending count, due time)

Folding reuses L2's `fold_messages` (the same rules as a live update); the model is the worker's
`memory_model`. Each fold step's LLM usage is recorded with that step's commit.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import PermanentError
from app.l2 import repository as l2_repo
from app.l2.folding import fold_messages, message_in
from app.l2.redis_state import L2RedisState
from app.llm.accounting import record_usage
from app.llm.base import Topic
from app.tasks.builtin import queries
from app.tasks.registry import FINISHED, State, TaskType
from app.tasks.step import StepContext

REBUILD_MAX_STEPS = 1_000_000  # folds of one rebuild (x batch_size messages): only a loop guard


class RebuildInput(BaseModel):
    chat_id: str = Field(min_length=1, max_length=200)
    batch_size: int = Field(100, ge=1, le=1000)  # messages folded per step (one model call each)


def _input(ctx: StepContext) -> RebuildInput:
    parsed = ctx.input
    assert isinstance(parsed, RebuildInput)
    return parsed


async def _fold_into_staging(ctx: StepContext, messages: list[dict[str, Any]]) -> list[Any]:
    """Fold `messages` into the staging topics in `ctx.data`; returns the model's usage records."""
    data = ctx.data
    current = [Topic.model_validate(topic) for topic in data["topics"]]
    batch = [
        message_in(m["id"], m["user_name"], m["user_id"], m["role"], m["content"], m["sent_at"])
        for m in messages
    ]
    result = await fold_messages(
        ctx.memory_model, _input(ctx).chat_id, current, data["next_topic_number"], batch
    )
    data["topics"] = [topic.model_dump(mode="json") for topic in result.topics]
    data["next_topic_number"] = result.next_topic_number
    data["cursor"] = messages[-1]["id"]
    data["folded"] += len(messages)
    data["summarizer"] = result.summarizer
    return list(result.usage)


async def fold(ctx: StepContext) -> str:
    params = _input(ctx)
    if "cursor" not in ctx.data:
        async with ctx.session_factory() as session:
            if await queries.chat_group(session, params.chat_id) is None:
                raise PermanentError(f"chat {params.chat_id!r} has no recorded messages and no topic memory")
        ctx.data.update(cursor=0, folded=0, topics=[], next_topic_number=1, summarizer=ctx.memory_model.name)
    async with ctx.session_factory() as session:
        messages = await queries.messages_after(
            session, chat_id=params.chat_id, after=ctx.data["cursor"], limit=params.batch_size
        )
    if messages:
        usage = await _fold_into_staging(ctx, messages)

        async def account(session: AsyncSession) -> None:
            await record_usage(
                session,
                usage,
                job_id=f"task:{ctx.task_id}",
                purpose="topics",
                subject_kind="chat",
                subject_id=params.chat_id,
            )

        ctx.on_commit(account)
    return "fold" if len(messages) == params.batch_size else "swap"


async def swap(ctx: StepContext) -> str:
    params = _input(ctx)
    async with ctx.session_factory() as session:
        behind = await queries.count_messages_after(session, params.chat_id, ctx.data["cursor"])
    if behind > params.batch_size:  # many messages arrived while folding: catch up without the lock
        return "fold"
    ctx.data["seq_before"] = await L2RedisState(ctx.redis, ctx.settings).read_seq(params.chat_id)

    async def swap_in(session: AsyncSession) -> None:
        await l2_repo.set_lock_timeout(session, ctx.settings.l2_lock_wait_seconds)
        memory = await l2_repo.lock_memory(session, params.chat_id)
        if memory is None:
            group = await queries.chat_group(session, params.chat_id)
            if group is None:
                raise PermanentError(f"chat {params.chat_id!r} disappeared during the rebuild")
            await l2_repo.create_memory(session, params.chat_id, group)
            memory = await l2_repo.lock_memory(session, params.chat_id)
            assert memory is not None
        tail = await queries.messages_after(
            session, chat_id=params.chat_id, after=ctx.data["cursor"], limit=10_000
        )
        usage = await _fold_into_staging(ctx, tail) if tail else []
        pending = await queries.pending_ids_up_to(session, params.chat_id, ctx.data["cursor"])
        version = memory.version + 1
        version_id = await l2_repo.insert_version(
            session,
            {
                "chat_id": params.chat_id,
                "group_id": memory.group_id,
                "version": version,
                "topics": ctx.data["topics"],
                "message_ids": pending,
                "message_count": len(pending),
                "summarizer": f"{ctx.data['summarizer']} (rebuild)",
                "duration_ms": 0,
                "started_at": ctx.now(),
                "job_id": f"task:{ctx.task_id}",
                "job_try": ctx.attempt,
            },
        )
        await l2_repo.mark_folded(session, pending, version_id)
        await l2_repo.save_memory(
            session,
            params.chat_id,
            {
                "version": version,
                "topics": ctx.data["topics"],
                "next_topic_number": ctx.data["next_topic_number"],
                "message_count": ctx.data["folded"],
                "updated_at": ctx.now(),
            },
        )
        await record_usage(
            session,
            usage,
            job_id=f"task:{ctx.task_id}",
            purpose="topics",
            subject_kind="chat",
            subject_id=params.chat_id,
        )
        ctx.data.update(version=version, newly_folded=len(pending))
        ctx.result = {
            "chat_id": params.chat_id,
            "version": version,
            "messages_folded": ctx.data["folded"],
            "topics": len(ctx.data["topics"]),
            "summarizer": ctx.data["summarizer"],
        }

    ctx.on_commit(swap_in)
    return "publish"


async def publish(ctx: StepContext) -> str:
    params = _input(ctx)
    async with ctx.session_factory() as session:
        remaining = await queries.count_pending(session, params.chat_id)
    await L2RedisState(ctx.redis, ctx.settings).after_update(
        params.chat_id,
        seq_before=ctx.data["seq_before"],
        folded=ctx.data["newly_folded"],
        remaining=remaining,
        now=ctx.now(),
        own_job_id=None,
    )
    return FINISHED


REBUILD_TOPIC_MEMORY = TaskType(
    name="rebuild_topic_memory",
    input_model=RebuildInput,
    initial="fold",
    states={
        "fold": State(fold, ("fold", "swap")),
        "swap": State(swap, ("fold", "publish")),
        "publish": State(publish, (FINISHED,)),
    },
    max_state_visits=REBUILD_MAX_STEPS,
    backoff_base_seconds=30.0,
    description="Re-fold a chat's whole history with the current model, then swap it in atomically.",
)
