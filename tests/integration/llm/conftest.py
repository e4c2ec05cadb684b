"""Fixtures for the LLM provider tests: the fake OpenAI-compatible server and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.config import Settings
from app.llm.base import MessageIn, Topic
from tests.support.fake_openai import FakeOpenAI
from tests.support.settings import make_test_settings

PRICES = {"fake-model": {"prompt_per_1k": "0.5", "completion_per_1k": "1.5"}}
START = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="test", model="fake-model") as server:
        yield server


def openai_settings(server: FakeOpenAI, **overrides: Any) -> Settings:
    """Test settings with LLM_PROVIDER=openai aimed at `server` (USD 0.5 / 1.5 per 1k tokens)."""
    values: dict[str, Any] = {
        "llm_provider": "openai",
        "llm_base_url": server.base_url,
        "llm_api_key": "test",
        "llm_model": "fake-model",
        "llm_timeout_seconds": 5.0,
        "llm_prices": PRICES,
    }
    values.update(overrides)
    return make_test_settings(**values)


def make_messages(
    count: int, *, first_id: int = 1, author: str = "Alice", text: str = "message number {n} about the deploy"
) -> list[MessageIn]:
    return [
        MessageIn(
            id=first_id + n,
            author=author if n % 2 == 0 else "Bob",
            role="user" if n % 2 == 0 else "assistant",
            content=text.format(n=first_id + n),
            sent_at=START + timedelta(minutes=n),
        )
        for n in range(count)
    ]


def make_topic(topic_id: str, title: str = "Release planning", message_count: int = 3) -> Topic:
    return Topic(
        id=topic_id,
        title=title,
        summary=f"{title}: what was said so far.",
        key_points=["ship on Friday"],
        participants=["Alice"],
        first_message_at=START - timedelta(days=1),
        last_message_at=START - timedelta(hours=1),
        message_count=message_count,
    )
