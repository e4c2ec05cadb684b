"""Every test here sees the test task types; they are removed again after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.tasks.registry import default_registry
from tests.integration.tasks.task_types import TASK_TYPES


@pytest.fixture(autouse=True)
def test_task_types() -> Iterator[None]:
    with default_registry.temporary(*TASK_TYPES):
        yield
