"""The built-in task types, registered in the default registry on import."""

from __future__ import annotations

from app.tasks.registry import TaskType, default_registry

BUILTIN_TASK_TYPES: list[TaskType] = []

for _task_type in BUILTIN_TASK_TYPES:
    default_registry.register(_task_type)
