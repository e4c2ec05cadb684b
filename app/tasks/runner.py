"""Running one claimed task: step after step, each committed before the next, under a renewed lease.

Guarantees:
- a step's outcome (new state, data, children, the step's own `on_commit` writes) is committed in
  one transaction, and only while this run still holds the lease: a step that committed is never
  run again, and a worker that lost its lease changes nothing;
- a heartbeat renews the lease every `LONG_TASK_HEARTBEAT_SECONDS` while a step runs, so a live
  task is never taken over; if the lease is lost anyway, the step is stopped;
- an exception is a failed try (retried after backoff, up to the type's maximum); an arq timeout or
  cancellation is recorded as an interrupted try and the lease released, then the cancellation
  propagates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.errors import PermanentError, ValidationError
from app.failures.guard import is_transient
from app.tasks import outcome, repository
from app.tasks.channel import StatementChannel
from app.tasks.registry import CANCELED, FAILED, FINAL_STATES, TaskRegistry, TaskType
from app.tasks.step import StepContext, TaskCanceled, TaskDeps
from app.tasks.views import TaskView

logger = logging.getLogger("app.tasks")
COMMIT_RETRIES = 3
RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock detected, serialization failure


class BadTransition(PermanentError):
    """A handler returned a state its declaration does not allow."""


class LeaseLost(Exception):
    """Our lease was taken over while a step ran; nothing of the step is committed."""


class TaskRunner:
    """Runs one claimed task until it ends, waits, backs off, loses its lease or the budget runs out."""

    def __init__(
        self,
        deps: TaskDeps,
        registry: TaskRegistry,
        owner: str,
        deadline: float,
        channel: StatementChannel | None = None,
    ) -> None:
        self.deps = deps
        self.channel = channel
        self.registry = registry
        self.owner = owner
        self.deadline = deadline  # time.monotonic() after which no new step starts
        self.lease = timedelta(seconds=deps.settings.long_task_lock_timeout_seconds)

    async def run(self, task: TaskView) -> int:
        """Returns the number of steps committed."""
        now = self.deps.clock()
        task_type = self.registry.get(task.task_type)
        if task_type is None:
            await self._unknown_type(task, now)
            return 0
        try:
            _, parsed = self.registry.validate(task.task_type, task.input)  # input never changes: parse once
        except ValidationError as exc:
            entry = outcome.error_entry(task, exc, "invalid_input", f"stored input is invalid: {exc}", now)
            await self._end(task, task_type, FAILED, [entry], now)
            return 0
        steps = 0
        while True:
            if task.cancel_requested:
                await self._end(task, task_type, CANCELED, [], self.deps.clock())
                return steps
            ctx = StepContext.for_task(task, task_type, parsed, self.deps, self.registry)
            committed = await self._step(task, task_type, ctx)
            if committed is None:
                return steps
            task, progressed = committed
            steps += progressed
            if not self._may_continue(task):
                return steps

    def _may_continue(self, task: TaskView) -> bool:
        return (
            task.lease_owner == self.owner
            and task.status == "running"
            and task.next_run_at <= self.deps.clock()
            and time.monotonic() < self.deadline
        )

    async def _step(
        self, task: TaskView, task_type: TaskType, ctx: StepContext
    ) -> tuple[TaskView, int] | None:
        """Run the handler and commit what it did; None when the lease was lost."""
        try:
            next_state = await self._run_with_heartbeat(task, task_type, ctx)
        except LeaseLost:
            logger.warning(
                "task %s: lease lost during state %r; another worker owns it now", task.id, task.state
            )
            return None
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(task, task_type))
            raise
        except TaskCanceled:
            return await self._end(task, task_type, CANCELED, [], self.deps.clock())
        except PermanentError as exc:
            now = self.deps.clock()
            kind = "bad_transition" if isinstance(exc, BadTransition) else "step_error"
            entry = outcome.error_entry(task, exc, kind, str(exc), now)
            return await self._end(task, task_type, FAILED, [entry], now)
        except Exception as exc:  # noqa: BLE001 - any other step error is a failed try, recorded below
            return await self._failed_try(task, task_type, exc)
        now = self.deps.clock()
        loop_reason = outcome.revisit_limit_exceeded(
            task, next_state, outcome.max_visits(task_type, self.deps.settings)
        )
        if loop_reason is not None:
            entry = outcome.error_entry(task, None, "loop", loop_reason, now)
            return await self._end(task, task_type, FAILED, [entry], now)
        values = outcome.advance(
            task, next_state, data=ctx.data, result=ctx.result, waiting=bool(ctx.children_to_spawn), now=now
        )
        try:
            return await self._commit(task, values, now, ctx=ctx, progressed=1)
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError | OSError) and is_transient(exc):
                raise  # the database is unreachable: the job retries; the lease hands the task on
            if isinstance(exc, PermanentError):
                entry = outcome.error_entry(task, exc, "step_error", f"{type(exc).__name__}: {exc}", now)
                return await self._end(task, task_type, FAILED, [entry], now)
            return await self._failed_try(task, task_type, exc)  # e.g. an on_commit action failed

    async def _run_with_heartbeat(self, task: TaskView, task_type: TaskType, ctx: StepContext) -> str:
        step = asyncio.create_task(self._handler_and_hook(task_type, ctx))
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(task.id, ctx, step, lost))
        try:
            return await step
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if lost.is_set() and (current is None or current.cancelling() == 0):
                raise LeaseLost() from None
            raise
        finally:
            beat.cancel()

    async def _handler_and_hook(self, task_type: TaskType, ctx: StepContext) -> str:
        state = ctx.state
        next_state = await task_type.states[state].handler(ctx)
        if next_state not in task_type.states[state].goes_to:
            allowed = ", ".join(task_type.states[state].goes_to)
            raise BadTransition(f"handler of state {state!r} returned {next_state!r}, not one of: {allowed}")
        if ctx.children_to_spawn and next_state in FINAL_STATES:
            raise BadTransition(f"state {state!r} spawned children but moved to final state {next_state!r}")
        if task_type.on_change is not None and next_state != state:
            await task_type.on_change(ctx, state, next_state)
        return next_state

    async def _heartbeat(
        self, task_id: int, ctx: StepContext, step: asyncio.Task[str], lost: asyncio.Event
    ) -> None:
        interval = self.deps.settings.long_task_heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.deps.session_factory.begin() as session:
                    cancel = await repository.renew_lease(
                        session, task_id=task_id, owner=self.owner, lease_until=self.deps.clock() + self.lease
                    )
            except (SQLAlchemyError, OSError) as exc:  # keep beating: the lease outlasts two missed beats
                logger.warning("task %s: lease renewal failed: %s: %s", task_id, type(exc).__name__, exc)
                continue
            if cancel is None:
                lost.set()
                step.cancel()
                return
            ctx.cancel_seen = ctx.cancel_seen or cancel

    async def _commit(
        self,
        task: TaskView,
        values: dict[str, Any],
        now: datetime,
        *,
        ctx: StepContext | None = None,
        progressed: int = 0,
    ) -> tuple[TaskView, int] | None:
        """Write `values` (plus the lease: kept if the task can go on, else released) if still ours.

        A deadlock or serialization failure is retried at once (up to `COMMIT_RETRIES` times) when
        the step has no `on_commit` actions; with actions it is a failed try, run again from scratch.
        """
        for attempt in range(1, COMMIT_RETRIES + 1):
            try:
                return await self._commit_once(task, dict(values), now, ctx=ctx, progressed=progressed)
            except DBAPIError as exc:
                retryable = getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES
                if not retryable or attempt == COMMIT_RETRIES or (ctx is not None and ctx.commit_actions):
                    raise
                logger.info("task %s: commit hit %s; retrying", task.id, getattr(exc.orig, "sqlstate", None))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _commit_once(
        self,
        task: TaskView,
        values: dict[str, Any],
        now: datetime,
        *,
        ctx: StepContext | None,
        progressed: int,
    ) -> tuple[TaskView, int] | None:
        status = values.get("status", task.status)
        next_run_at = values.get("next_run_at", task.next_run_at)
        keep = status == "running" and next_run_at <= now and time.monotonic() < self.deadline
        values.update(
            outcome.lease_values(self.owner, now + self.lease) if keep else outcome.lease_values(None, None)
        )
        full = {
            name: values[name] if name in values else getattr(task, name) for name in repository.STEP_COLUMNS
        }
        ends_child = status in FINAL_STATES and task.parent_id is not None
        if (
            not (ctx and (ctx.commit_actions or ctx.children_to_spawn))
            and not ends_child
            and status != CANCELED
        ):
            single = self.channel.use() if self.channel is not None else self.deps.autocommit()
            async with single as connection:  # nothing else to write: one statement
                cancel = await repository.commit_step(
                    connection, task_id=task.id, owner=self.owner, values=full
                )
            return self._committed(task, values, cancel, progressed)
        async with self.deps.session_factory.begin() as session:
            if ends_child and task.parent_id is not None:  # rows are locked parent first, like a cascade
                await repository.lock_task(session, task.parent_id)
            if not await repository.lock_if_leased(session, task_id=task.id, owner=self.owner):
                return self._committed(task, values, None, progressed)
            if ctx is not None and ctx.commit_actions:
                for action in ctx.commit_actions:  # they may still add to the step's data and result
                    await action(session)
                if "data" in values:
                    values.update(data=ctx.data, result=ctx.result)
                    full.update(data=ctx.data, result=ctx.result)
            cancel = await repository.commit_step(session, task_id=task.id, owner=self.owner, values=full)
            if ctx is not None:
                await repository.insert_children(
                    session,
                    task.id,
                    [{**child, "state_visits": {child["state"]: 1}} for child in ctx.children_to_spawn],
                )
            if ends_child and task.parent_id is not None:
                await repository.wake_parent(session, task.parent_id, now)
            if status == CANCELED:
                await repository.request_cancel(session, task.id, now)
        return self._committed(task, values, cancel, progressed)

    def _committed(
        self, task: TaskView, values: dict[str, Any], cancel: bool | None, progressed: int
    ) -> tuple[TaskView, int] | None:
        if cancel is None:
            logger.warning("task %s: lease lost before commit; step result discarded", task.id)
            return None
        status = values.get("status", task.status)
        if status in FINAL_STATES:
            logger.info(
                "task %s (%s) ended %s in state %r",
                task.id,
                task.task_type,
                status,
                values.get("state", task.state),
            )
        return task.model_copy(update={**values, "cancel_requested": cancel}), progressed

    async def _failed_try(
        self, task: TaskView, task_type: TaskType, exc: BaseException
    ) -> tuple[TaskView, int] | None:
        now = self.deps.clock()
        entry = outcome.error_entry(task, exc, "step_error", f"{type(exc).__name__}: {exc}", now)
        values = outcome.failed_try(task, task_type, self.deps.settings, entry, now)
        logger.warning(
            "task %s: step %r failed (try %s): %s: %s",
            task.id,
            task.state,
            task.attempts + 1,
            type(exc).__name__,
            exc,
        )
        if values.get("status") == FAILED:
            return await self._end(task, task_type, FAILED, [], now, values=values)
        return await self._commit(task, values, now)

    async def _interrupted(self, task: TaskView, task_type: TaskType) -> None:
        """The job was cancelled or timed out mid-step: count the try, release the lease for a retry."""
        now = self.deps.clock()
        entry = outcome.error_entry(
            task, None, "interrupted", "the step was interrupted (job timeout or cancellation)", now
        )
        values = outcome.failed_try(task, task_type, self.deps.settings, entry, now)
        values["next_run_at"] = min(values["next_run_at"], now) if values.get("status") != FAILED else now
        try:
            await self._commit(task, values, now)
        except (SQLAlchemyError, OSError):  # the lease expiry still hands the task to another worker
            logger.exception("task %s: could not record the interrupted step", task.id)

    async def _end(
        self,
        task: TaskView,
        task_type: TaskType | None,
        status: str,
        entries: list[dict[str, Any]],
        now: datetime,
        *,
        values: dict[str, Any] | None = None,
    ) -> tuple[TaskView, int] | None:
        """End the task failed or canceled, running the type's hook first (a hook error is recorded)."""
        values = values if values is not None else outcome.ended(task, status, entries, now)
        ctx: StepContext | None = None
        if task_type is not None and task_type.on_change is not None:
            try:
                _, parsed = self.registry.validate(task.task_type, task.input)
                ctx = StepContext.for_task(task, task_type, parsed, self.deps, self.registry)
                await task_type.on_change(ctx, task.state, status)
            except Exception as hook_exc:  # noqa: BLE001 - the task ends anyway; the error is kept in its history
                ctx = None
                values["errors"] = [
                    *values.get("errors", task.errors),
                    outcome.error_entry(
                        task, hook_exc, "hook_error", f"{type(hook_exc).__name__}: {hook_exc}", now
                    ),
                ]
        if ctx is not None:
            ctx.children_to_spawn.clear()  # a task that ends has no children to wait for
        return await self._commit(task, values, now, ctx=ctx)

    async def _unknown_type(self, task: TaskView, now: datetime) -> None:
        """A worker without this type (an older deployment) leaves the task for one that has it."""
        logger.error(
            "task %s: type %r is not registered in this worker; leaving it for another",
            task.id,
            task.task_type,
        )
        await self._commit(task, {"next_run_at": now + self.lease}, now)
