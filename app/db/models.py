"""Every table, imported in one place so Alembic and `create_all` see the whole schema.

Each domain keeps its tables in its own package; this module only gathers them.
"""

from __future__ import annotations

from app.db.base import Base
from app.evolve.models import (
    EvolveDailyRun,
    GroupChatCursor,
    GroupDistillationDay,
    GroupMemory,
    GroupMemoryVersion,
)
from app.failures.models import JobFailure
from app.l2.models import ChatMessage, TopicMemory, TopicMemoryVersion
from app.llm.models import LlmCall
from app.tasks.models import LongTask

__all__ = [
    "Base",
    "ChatMessage",
    "EvolveDailyRun",
    "GroupChatCursor",
    "GroupDistillationDay",
    "GroupMemory",
    "GroupMemoryVersion",
    "JobFailure",
    "LlmCall",
    "LongTask",
    "TopicMemory",
    "TopicMemoryVersion",
]
