"""Provider pieces that need no server: Retry-After parsing, the factory, required settings."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx2
import openai
import pytest

from app.config import load_settings
from app.errors import ConfigError
from app.llm.factory import build_memory_model
from app.llm.offline import OfflineMemoryModel
from app.llm.openai_provider import RETRY_AFTER_MAX_SECONDS, OpenAICompatibleModel, _retry_after_seconds


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited LLM_* settings and no `.env`: each test states its own."""
    for name in list(os.environ):
        if name.startswith("LLM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def rate_limited(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
    response = httpx2.Response(429, headers=headers, request=request)
    return openai.RateLimitError("rate limited", response=response, body=None)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "100000"}, RETRY_AFTER_MAX_SECONDS),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert _retry_after_seconds(rate_limited(headers)) == seconds


def test_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = _retry_after_seconds(rate_limited({"Retry-After": when}))
    assert seconds is not None and 25 <= seconds <= 30


async def test_the_factory_builds_the_configured_provider() -> None:
    assert isinstance(build_memory_model(load_settings()), OfflineMemoryModel)
    settings = load_settings(
        llm_provider="openai", llm_base_url="http://127.0.0.1:9/v1", llm_api_key="k", llm_model="qwen-max"
    )
    model = build_memory_model(settings)
    assert isinstance(model, OpenAICompatibleModel)
    assert model.name == "openai:qwen-max:prompts-v1"
    await model.aclose()


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        ({"llm_api_key": "k"}, "LLM_MODEL is required when LLM_PROVIDER=openai"),
        ({"llm_model": "m"}, "LLM_API_KEY is required when LLM_PROVIDER=openai"),
        ({"llm_model": "m", "llm_api_key": "k", "llm_max_input_tokens": 500}, "LLM_MAX_INPUT_TOKENS=500"),
    ],
)
def test_openai_without_key_or_model_does_not_start(overrides: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError, match=line):
        load_settings(llm_provider="openai", **overrides)
