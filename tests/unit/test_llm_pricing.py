"""LLM_PRICES: parsing, validation with one clear line, and the cost of a call."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import ConfigError
from app.llm.pricing import ModelPrice, call_cost

PRICES = {"gpt-4o-mini": ModelPrice(prompt_per_1k=Decimal("0.00015"), completion_per_1k=Decimal("0.0006"))}


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited LLM_* settings and no `.env`: each test states its own."""
    for name in list(os.environ):
        if name.startswith("LLM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_cost_is_priced_per_thousand_tokens_and_rounded_to_a_millionth() -> None:
    assert call_cost(PRICES, "gpt-4o-mini", 10_000, 2_000) == Decimal("0.002700")
    assert call_cost(PRICES, "gpt-4o-mini", 1, 1) == Decimal("0.000001")  # 0.00000075 rounds up


def test_a_model_without_a_price_costs_nothing() -> None:
    assert call_cost(PRICES, "other-model", 10_000, 2_000) == Decimal("0")
    assert call_cost({}, "gpt-4o-mini", 10_000, 2_000) == Decimal("0")


def test_price_table_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "LLM_PRICES", '{"deepseek-chat": {"prompt_per_1k": 0.00027, "completion_per_1k": "0.0011"}}'
    )
    prices = load_settings().llm_prices
    assert prices == {
        "deepseek-chat": ModelPrice(prompt_per_1k=Decimal("0.00027"), completion_per_1k=Decimal("0.0011"))
    }


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"m": ', "LLM_PRICES="),
        ('{"m": ', "must be a JSON object (Expecting value at character 6)"),
        ("[1, 2]", "must be a JSON object"),
        ('{"m": {"prompt_per_1k": -1, "completion_per_1k": 1}}', "model 'm': prompt_per_1k input should be"),
        ('{"m": {"prompt_per_1k": 1}}', "model 'm': completion_per_1k field required"),
        ('{"m": {"prompt_per_1k": 1, "completion_per_1k": 1, "per_image": 2}}', "per_image extra inputs"),
    ],
)
def test_a_bad_price_table_stops_start_up_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("LLM_PRICES", value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_llm_defaults() -> None:
    settings = load_settings()
    assert (settings.llm_max_retries, settings.llm_max_input_tokens, settings.llm_json_mode) == (
        1,
        8000,
        True,
    )
    assert settings.llm_prices == {}
