"""L2 fixtures: small thresholds so a few messages exercise triggers and backlogs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.client import MemoryClient
from app.config import Settings
from tests.support.settings import make_test_settings

THRESHOLD = 3  # L2_QUEUE_TRIGGER_THRESHOLD in these tests
MAX_LEN = 5  # L2_QUEUE_MAX_LEN in these tests


@pytest.fixture
def l2_settings(settings: Settings) -> Settings:
    """The session's test database and Redis db, with a threshold of 3 and at most 5 per update."""
    return make_test_settings(
        l2_queue_trigger_threshold=THRESHOLD,
        l2_queue_max_len=MAX_LEN,
        l2_lock_wait_seconds=2,
        worker_max_tries=3,
    )


@pytest.fixture
async def l2_client(l2_settings: Settings) -> AsyncIterator[MemoryClient]:
    async with MemoryClient(l2_settings) as memory_client:
        yield memory_client
