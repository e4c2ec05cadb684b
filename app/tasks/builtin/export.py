"""`export_memories`: write a chat's (or a whole group's) memories and message history to a JSON Lines
file under `LONG_TASK_EXPORT_DIR`, step by step.

    header    the file's first lines: what was exported, then the current memories (the chat's topic
              memory; for a group, its consensus memory and every chat's topic memory)
    messages  (repeated) the next `batch_size` messages, one line each, oldest first
    seal      rename `<file>.partial` to `<file>`: a file under its final name is always complete

Each step first cuts the partial file back to the length recorded by the last committed step, so a
step that is retried (or run again after a crash) never writes a line twice. All workers must see
the same export directory (one host, or shared storage); a step that finds the file shorter than
recorded fails with that reason instead of writing a broken export.

Line shapes: {"type": "export", ...}, {"type": "group_memory", ...}, {"type": "topic_memory", ...},
{"type": "message", ...}.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from app.errors import PermanentError
from app.tasks.builtin import queries
from app.tasks.registry import FINISHED, State, TaskType
from app.tasks.step import StepContext

EXPORT_MAX_STEPS = 1_000_000
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}\.jsonl$")


class ExportInput(BaseModel):
    chat_id: str | None = Field(None, min_length=1, max_length=200)
    group_id: str | None = Field(None, min_length=1, max_length=200)
    file_name: str | None = None  # default: <chat|group>-<id>-task<task id>.jsonl
    batch_size: int = Field(1000, ge=1, le=10_000)  # messages written per step

    @model_validator(mode="after")
    def _one_subject(self) -> ExportInput:
        if (self.chat_id is None) == (self.group_id is None):
            raise ValueError("give exactly one of chat_id or group_id")
        if self.file_name is not None and not _FILE_NAME.match(self.file_name):
            raise ValueError("file_name must be a plain name ending in .jsonl (letters, digits, . _ -)")
        return self


def _input(ctx: StepContext) -> ExportInput:
    parsed = ctx.input
    assert isinstance(parsed, ExportInput)
    return parsed


def _final_path(ctx: StepContext) -> Path:
    params = _input(ctx)
    if params.file_name is not None:
        name = params.file_name
    else:
        kind, subject = ("chat", params.chat_id) if params.chat_id else ("group", params.group_id)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", subject or "")[:100]
        name = f"{kind}-{safe}-task{ctx.task_id}.jsonl"
    return Path(ctx.settings.long_task_export_dir).resolve() / name


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _append(path: Path, offset: int, lines: list[dict[str, Any]]) -> int:
    """Cut the file back to `offset` (what earlier steps committed), append `lines`; returns the new size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if offset == 0:
        path.write_bytes(b"")
    elif not path.exists() or path.stat().st_size < offset:
        raise PermanentError(
            f"export file {path} is missing or shorter than the {offset} bytes already written: "
            f"LONG_TASK_EXPORT_DIR must be the same directory for every worker"
        )
    with path.open("r+b") as handle:
        handle.truncate(offset)
        handle.seek(offset)
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False, default=str).encode() + b"\n")
        handle.flush()
        return handle.tell()


async def _write(ctx: StepContext, lines: list[dict[str, Any]]) -> None:
    path = _partial(_final_path(ctx))
    ctx.data["bytes"] = await asyncio.to_thread(_append, path, ctx.data.get("bytes", 0), lines)
    ctx.data["lines"] = ctx.data.get("lines", 0) + len(lines)


async def header(ctx: StepContext) -> str:
    params = _input(ctx)
    async with ctx.session_factory() as session:
        if params.chat_id is not None:
            if await queries.chat_group(session, params.chat_id) is None:
                raise PermanentError(f"chat {params.chat_id!r} has no recorded messages and no topic memory")
            group = None
            memories = await queries.topic_memories(session, chat_id=params.chat_id)
        else:
            assert params.group_id is not None
            group = await queries.group_memory(session, params.group_id)
            memories = await queries.topic_memories(session, group_id=params.group_id)
            if group is None and not memories:
                if not await queries.messages_after(session, group_id=params.group_id, after=0, limit=1):
                    raise PermanentError(f"group {params.group_id!r} has no messages and no memories")
    lines: list[dict[str, Any]] = [
        {
            "type": "export",
            "chat_id": params.chat_id,
            "group_id": params.group_id,
            "task_id": ctx.task_id,
            "exported_at": ctx.now().isoformat(),
        }
    ]
    if group is not None:
        lines.append({"type": "group_memory", **group})
    lines.extend({"type": "topic_memory", **memory} for memory in memories)
    ctx.data.update(bytes=0, lines=0, cursor=0, messages=0, memories=len(memories) + (group is not None))
    await _write(ctx, lines)
    return "messages"


async def messages(ctx: StepContext) -> str:
    params = _input(ctx)
    async with ctx.session_factory() as session:
        rows = await queries.messages_after(
            session,
            chat_id=params.chat_id,
            group_id=params.group_id,
            after=ctx.data["cursor"],
            limit=params.batch_size,
        )
    if rows:
        lines = [
            {"type": "message", **{k: v for k, v in row.items() if k != "topic_version_id"}} for row in rows
        ]
        await _write(ctx, lines)
        ctx.data["cursor"] = rows[-1]["id"]
        ctx.data["messages"] += len(rows)
    return "messages" if len(rows) == params.batch_size else "seal"


async def seal(ctx: StepContext) -> str:
    final = _final_path(ctx)
    partial = _partial(final)
    if partial.exists():
        await asyncio.to_thread(partial.replace, final)
    elif not final.exists():  # a retried seal after the rename finds the final file instead
        raise PermanentError(f"export file {partial} vanished before it was complete")
    ctx.result = {
        "path": str(final),
        "lines": ctx.data["lines"],
        "bytes": ctx.data["bytes"],
        "messages": ctx.data["messages"],
        "memories": ctx.data["memories"],
    }
    return FINISHED


EXPORT_MEMORIES = TaskType(
    name="export_memories",
    input_model=ExportInput,
    initial="header",
    states={
        "header": State(header, ("messages",)),
        "messages": State(messages, ("messages", "seal")),
        "seal": State(seal, (FINISHED,)),
    },
    max_state_visits=EXPORT_MAX_STEPS,
    backoff_base_seconds=10.0,
    description="Write a chat's or group's memories and history to a JSON Lines file.",
)
