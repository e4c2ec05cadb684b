"""Task types used only by tests. Worker processes load them with
LONG_TASK_TYPE_MODULES=tests.integration.tasks.task_types; in-process tests add them with
`default_registry.temporary(*TASK_TYPES)`.

Handlers record what they do in Redis (the test db), so a test can count runs of each step, see
which worker ran it, and catch two runs of one task at the same time.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from app.tasks.registry import FINISHED, State, TaskType
from app.tasks.step import StepContext

CHILD_STEP_LIMIT_SECONDS = 30.0  # a child that is never canceled finishes after this


class StepsInput(BaseModel):
    block_in_b: bool = False  # step b waits for the key tt:release:{task_id}
    block_first_try_of_b: bool = False  # step b blocks forever on its first try (timeout tests)
    work_seconds: float = 0.0  # each step takes this long (overlap test)


def runs_key(task_id: int, state: str) -> str:
    return f"tt:runs:{task_id}:{state}"


def log_key(task_id: int) -> str:
    return f"tt:log:{task_id}"


def release_key(task_id: int) -> str:
    return f"tt:release:{task_id}"


VIOLATIONS_KEY = "tt:violations"


async def _record(ctx: StepContext, state: str) -> None:
    await ctx.redis.incr(runs_key(ctx.task_id, state))
    await ctx.redis.rpush(log_key(ctx.task_id), f"{state}|{ctx.deps.worker_id}|{ctx.attempt}")  # type: ignore[misc]
    ctx.data.setdefault("visited", []).append(state)


async def _guarded_work(ctx: StepContext, seconds: float) -> None:
    """Hold a per-task Redis flag while working: finding it already set means two runs overlap."""
    if not seconds:
        return
    running = f"tt:running:{ctx.task_id}"
    if not await ctx.redis.set(running, ctx.deps.worker_id, nx=True):
        await ctx.redis.rpush(VIOLATIONS_KEY, f"{ctx.task_id}:{ctx.state}")  # type: ignore[misc]
    await asyncio.sleep(seconds)  # the step's simulated work
    await ctx.redis.delete(running)


async def step_a(ctx: StepContext) -> str:
    await _record(ctx, "a")
    await _guarded_work(ctx, ctx.input.work_seconds)  # type: ignore[attr-defined]
    return "b"


async def step_b(ctx: StepContext) -> str:
    await _record(ctx, "b")
    parsed = ctx.input
    assert isinstance(parsed, StepsInput)
    if parsed.block_in_b:
        while not await ctx.redis.exists(release_key(ctx.task_id)):
            await asyncio.sleep(0.05)
    if parsed.block_first_try_of_b and ctx.attempt == 1:
        await asyncio.Event().wait()  # never set: only a timeout or cancellation ends this try
    await _guarded_work(ctx, parsed.work_seconds)
    return "c"


async def step_c(ctx: StepContext) -> str:
    await _record(ctx, "c")
    await _guarded_work(ctx, ctx.input.work_seconds)  # type: ignore[attr-defined]
    ctx.result = {"visited": ctx.data["visited"]}
    return FINISHED


THREE_STEPS = TaskType(
    name="test_three_steps",
    input_model=StepsInput,
    initial="a",
    states={"a": State(step_a, ("b",)), "b": State(step_b, ("c",)), "c": State(step_c, (FINISHED,))},
)


class FailInput(BaseModel):
    succeed_when_key: str | None = None  # fail until this Redis key exists


async def always_fails(ctx: StepContext) -> str:
    await ctx.redis.incr(runs_key(ctx.task_id, "work"))
    key = ctx.input.succeed_when_key  # type: ignore[attr-defined]
    if key is not None and await ctx.redis.exists(key):
        return FINISHED
    raise RuntimeError(f"boom on try {ctx.attempt}")


FAILING = TaskType(
    name="test_failing",
    input_model=FailInput,
    initial="work",
    states={"work": State(always_fails, (FINISHED,))},
    max_attempts=3,
    backoff_base_seconds=10.0,
    backoff_max_seconds=15.0,
)


class Empty(BaseModel):
    pass


async def ping(ctx: StepContext) -> str:
    return "pong"


async def pong(ctx: StepContext) -> str:
    return "ping"


LOOPING = TaskType(
    name="test_looping",
    input_model=Empty,
    initial="ping",
    states={"ping": State(ping, ("pong", FINISHED)), "pong": State(pong, ("ping", FINISHED))},
    max_state_visits=3,
)


class ParentInput(BaseModel):
    children: int = 2
    child_type: str = "test_until_canceled"


async def spawn_children(ctx: StepContext) -> str:
    for _ in range(ctx.input.children):  # type: ignore[attr-defined]
        ctx.spawn(ctx.input.child_type, {})  # type: ignore[attr-defined]
    return "collect"


async def collect(ctx: StepContext) -> str:
    ctx.result = {"children": {str(child.id): child.status for child in await ctx.children()}}
    return FINISHED


PARENT = TaskType(
    name="test_parent",
    input_model=ParentInput,
    initial="spawn",
    states={"spawn": State(spawn_children, ("collect",)), "collect": State(collect, (FINISHED,))},
)


async def work_until_canceled(ctx: StepContext) -> str:
    """A long step that checks for cancellation between units of work."""
    await ctx.redis.set(f"tt:child-running:{ctx.task_id}", "1")
    deadline = asyncio.get_running_loop().time() + CHILD_STEP_LIMIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        await ctx.check_canceled()
        await asyncio.sleep(0.05)  # one unit of simulated work
    return FINISHED


async def note_change(ctx: StepContext, old: str, new: str) -> None:
    await ctx.redis.rpush(f"tt:changes:{ctx.task_id}", f"{old}->{new}")  # type: ignore[misc]


UNTIL_CANCELED = TaskType(
    name="test_until_canceled",
    input_model=Empty,
    initial="work",
    states={"work": State(work_until_canceled, (FINISHED,))},
    on_change=note_change,
)


async def quick(ctx: StepContext) -> str:
    return FINISHED


QUICK_CHILD = TaskType(
    name="test_quick_child",
    input_model=Empty,
    initial="work",
    states={"work": State(quick, (FINISHED,))},
)


async def wander(ctx: StepContext) -> str:
    return "nowhere"


BAD_TRANSITION = TaskType(
    name="test_bad_transition",
    input_model=Empty,
    initial="work",
    states={"work": State(wander, (FINISHED,))},
)


async def fails_once(ctx: StepContext) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("flaky on try 1")
    return FINISHED


FLAKY = TaskType(
    name="test_flaky",
    input_model=Empty,
    initial="work",
    states={"work": State(fails_once, (FINISHED,))},
    backoff_base_seconds=1.0,
    backoff_max_seconds=1.0,
)

TASK_TYPES: list[TaskType] = [
    THREE_STEPS,
    FAILING,
    LOOPING,
    PARENT,
    UNTIL_CANCELED,
    QUICK_CHILD,
    BAD_TRANSITION,
    FLAKY,
]
