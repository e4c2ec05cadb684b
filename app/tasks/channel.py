"""One autocommit connection a run keeps for its single-statement writes (claims, plain step commits).

Why: every pool checkout pays the engine's pre-ping (BEGIN; ping; ROLLBACK: three round trips),
three times the cost of the claim itself. A run makes one checkout for all its claims and plain
step commits instead; an asyncio lock lets its concurrent task runners share the connection one
statement at a time. Transactions (steps with `on_commit` actions, children, cancellation) and
heartbeats still use pooled sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection

from app.tasks.step import TaskDeps


class StatementChannel:
    """`async with StatementChannel(deps) as channel:` then `async with channel.use() as connection:`."""

    def __init__(self, deps: TaskDeps) -> None:
        self._deps = deps
        self._lock = asyncio.Lock()
        self._connection: AsyncConnection | None = None
        self._context: AbstractAsyncContextManager[AsyncConnection] | None = None

    async def __aenter__(self) -> Self:
        self._context = self._deps.autocommit()
        self._connection = await self._context.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._connection = None
        if self._context is not None:
            await self._context.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        """The connection, for one statement at a time."""
        if self._connection is None:
            raise RuntimeError("StatementChannel used outside its `async with` block")
        async with self._lock:
            yield self._connection
