"""`purge_chat`: delete a chat's messages and memories everywhere, Redis included, and say what went.

    messages  (repeated) delete the next `batch_size` of the chat's messages
    memory    delete its topic memory, every version of it, and its group distillation cursors
    redis     remove the chat from every L2 scheduling key (pending count, due time, queued marker)

Every deletion is written in the same transaction as the step that counts it, so the summary in
`result["removed"]` is exact even across retries and crashes. Kept on purpose: the group's
consensus memory (it belongs to the group and cites topics only by id) and the LLM cost records.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import PermanentError
from app.tasks.builtin import queries
from app.tasks.registry import FINISHED, State, TaskType
from app.tasks.step import StepContext

PURGE_MAX_STEPS = 1_000_000


class PurgeInput(BaseModel):
    chat_id: str = Field(min_length=1, max_length=200)
    batch_size: int = Field(5000, ge=1, le=50_000)  # messages deleted per step


def _input(ctx: StepContext) -> PurgeInput:
    parsed = ctx.input
    assert isinstance(parsed, PurgeInput)
    return parsed


async def delete_messages(ctx: StepContext) -> str:
    params = _input(ctx)
    async with ctx.session_factory() as session:
        if "removed" not in ctx.data and await queries.chat_group(session, params.chat_id) is None:
            raise PermanentError(f"chat {params.chat_id!r} has no recorded messages and no topic memory")
        more = await queries.count_messages_after(session, params.chat_id, 0) > params.batch_size
    ctx.data.setdefault("removed", {"chat_messages": 0})

    async def delete(session: AsyncSession) -> None:
        ctx.data["removed"]["chat_messages"] += await queries.delete_messages(
            session, params.chat_id, params.batch_size
        )

    ctx.on_commit(delete)
    return "messages" if more else "memory"


async def delete_memory(ctx: StepContext) -> str:
    params = _input(ctx)

    async def delete(session: AsyncSession) -> None:
        ctx.data["removed"].update(await queries.delete_chat_memory(session, params.chat_id))
        stragglers = await queries.delete_messages(session, params.chat_id, 1_000_000)  # recorded meanwhile
        ctx.data["removed"]["chat_messages"] += stragglers

    ctx.on_commit(delete)
    return "redis"


async def forget_in_redis(ctx: StepContext) -> str:
    params = _input(ctx)
    ctx.data["removed"]["redis_entries"] = await queries.forget_chat_in_redis(ctx.redis, params.chat_id)
    ctx.result = {"chat_id": params.chat_id, "removed": ctx.data["removed"]}
    return FINISHED


PURGE_CHAT = TaskType(
    name="purge_chat",
    input_model=PurgeInput,
    initial="messages",
    states={
        "messages": State(delete_messages, ("messages", "memory")),
        "memory": State(delete_memory, ("redis",)),
        "redis": State(forget_in_redis, (FINISHED,)),
    },
    max_state_visits=PURGE_MAX_STEPS,
    backoff_base_seconds=10.0,
    description="Delete a chat's messages and memories everywhere, Redis included.",
)
