"""The one wrapper every job body runs in: retries transient faults, records final failures.

arq retries only `Retry`; any other exception fails the job on its first try and the failure is
forgotten after `keep_result`. So every job runs its body through `run_guarded`, which
- bounds the body by its own timeout (shorter than arq's), so a timeout is a recorded failure;
- turns transient faults into `Retry(defer=exponential backoff)` until `WORKER_MAX_TIRES` tries;
- writes every final failure to the `job_failures` table (job id, function, try, reason) and
  logs it, then re-raises so arq's own result says failed too.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from arq import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from app.constants import TRANSIENT_BACKOFF_BASE_SECONDS, TRANSIENT_BACKOFF_MAX_SECONDS
from app.context import WorkerContext
from app.errors import TransientError
from app.failures.repository import insert_failure

logger = logging.getLogger("app.jobs")
T = TypeVar("T")
TIMEOUT_MARGIN_SECONDS = 2.0  # our timeout fires this long before arq's, so we can record it

TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    OperationalError,
    InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Connection-level faults and our `TransientError`; everything else is permanent."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT_EXCEPTIONS)


def backoff_seconds(job_try: int, retry_after: float | None = None) -> float:
    """1 s, 2 s, 4 s, ... capped at 60 s; a server's Retry-After wins when it is longer."""
    delay = min(TRANSIENT_BACKOFF_BASE_SECONDS * 2.0 ** max(job_try - 1, 0), TRANSIENT_BACKOFF_MAX_SECONDS)
    return max(delay, retry_after or 0.0)


async def record_failure(
    ctx: WorkerContext,
    function: str,
    arguments: dict[str, Any],
    subject: tuple[str, str] | None,
    exc: BaseException,
) -> None:
    """Store the failure in Postgres; if even that fails, say so loudly in the log."""
    reason = str(exc) or type(exc).__name__
    details: dict[str, Any] = {"traceback": "".join(traceback.format_exception(exc))[-8000:]}
    raw_answer = getattr(exc, "raw_answer", None)
    if raw_answer is not None:
        details["raw_answer"] = str(raw_answer)[:20000]
    try:
        async with ctx["session_factory"].begin() as session:
            await insert_failure(
                session,
                job_id=ctx.get("job_id"),
                function=function,
                job_try=ctx.get("job_try"),
                arguments=arguments,
                subject_kind=subject[0] if subject else None,
                subject_id=subject[1] if subject else None,
                error_type=type(exc).__name__,
                reason=reason,
                details=details,
            )
    except Exception:  # the database itself may be the fault; the log line below still tells the operator
        logger.exception("could not record failure of %s job %s", function, ctx.get("job_id"))


async def run_guarded(
    ctx: WorkerContext,
    function: str,
    arguments: dict[str, Any],
    body: Callable[[], Awaitable[T]],
    *,
    subject: tuple[str, str] | None = None,
    timeout_seconds: float,
) -> T:
    """Run `body` under the retry and failure policy above; `subject` is e.g. ("chat", chat_id)."""
    job_try = ctx.get("job_try", 1)
    max_tries = ctx["settings"].worker_max_tries
    try:
        async with asyncio.timeout(max(timeout_seconds - TIMEOUT_MARGIN_SECONDS, 1.0)):
            return await body()
    except Retry:
        raise
    except Exception as exc:
        where = f"{function} job {ctx.get('job_id')} try {job_try}/{max_tries}"
        if is_transient(exc) and job_try < max_tries:
            delay = backoff_seconds(job_try, getattr(exc, "retry_after_seconds", None))
            logger.warning("%s: transient %s: %s; retrying in %.1f s", where, type(exc).__name__, exc, delay)
            raise Retry(defer=delay) from exc
        logger.error("%s failed: %s: %s", where, type(exc).__name__, exc)
        await record_failure(ctx, function, arguments, subject, exc)
        raise
