"""The built-in task types, registered in the default registry on import."""

from __future__ import annotations

from app.tasks.builtin.export import EXPORT_MEMORIES
from app.tasks.builtin.purge import PURGE_CHAT
from app.tasks.builtin.rebuild import REBUILD_TOPIC_MEMORY
from app.tasks.registry import TaskType, default_registry

BUILTIN_TASK_TYPES: list[TaskType] = [REBUILD_TOPIC_MEMORY, EXPORT_MEMORIES, PURGE_CHAT]

for _task_type in BUILTIN_TASK_TYPES:
    default_registry.register(_task_type)
