"""The token estimate and truncation that bound every prompt."""

from __future__ import annotations

import pytest

from app.llm.tokens import Budget, estimate_tokens, truncate_to_tokens


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abcd", 1),
        ("abcde", 2),
        ("x" * 400, 100),
        ("部署", 2),  # one per CJK character
        ("我们周五部署 v2.1 吧", 9),  # 7 CJK characters, " v2.1 " = 6 chars = 2 tokens
        ("こんにちは", 5),
        ("안녕하세요", 5),
    ],
)
def test_estimate(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_estimate_of_a_whole_is_at_most_the_sum_of_its_parts() -> None:
    parts = ["hello ", "世界", " and more text", "。"]
    assert estimate_tokens("".join(parts)) <= sum(estimate_tokens(part) for part in parts)


def test_short_text_is_not_truncated() -> None:
    assert truncate_to_tokens("short", 10) == "short"


@pytest.mark.parametrize("text", ["y" * 10_000, "长" * 3000, ("mixed 中文 text " * 500)])
def test_long_text_is_cut_within_the_budget_with_a_marker(text: str) -> None:
    cut = truncate_to_tokens(text, 100)
    assert estimate_tokens(cut) <= 100
    kept = cut.split(" […truncated ")[0]
    assert text.startswith(kept) and len(kept) > 0
    assert cut.endswith(f"{len(text) - len(kept)} characters]")


def test_budget_shares() -> None:
    budget = Budget(8000)
    assert (budget.request_tokens, budget.repair_reserve, budget.message_tokens) == (6000, 2000, 1000)
    assert Budget(8000, repairs=False).request_tokens == 8000
