"""The price table (LLM_PRICES) and the cost of one call.

LLM_PRICES is JSON mapping a model name to its USD prices per 1,000 tokens, e.g.
`{"gpt-4o-mini": {"prompt_per_1k": 0.00015, "completion_per_1k": 0.0006}}`. A model missing from the
table is accounted at zero cost (its tokens are still recorded), and the worker logs that once.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

logger = logging.getLogger("app.llm")
COST_QUANTUM = Decimal("0.000001")  # llm_calls.cost_usd is NUMERIC(14, 6)
_unpriced_logged: set[str] = set()


class ModelPrice(BaseModel):
    """USD per 1,000 tokens, prompt and completion priced apart (as every provider bills)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_1k: Decimal = Field(ge=0)
    completion_per_1k: Decimal = Field(ge=0)


def parse_price_table(value: Any) -> dict[str, ModelPrice]:
    """LLM_PRICES from JSON text or a mapping; a ValueError names the model and the field at fault."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"must be a JSON object ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError('must be a JSON object: {"model": {"prompt_per_1k": x, "completion_per_1k": y}}')
    table: dict[str, ModelPrice] = {}
    for model, price in value.items():
        if isinstance(price, ModelPrice):
            table[str(model)] = price
            continue
        try:
            table[str(model)] = ModelPrice.model_validate(price)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'price'} {error['msg'].lower()}"
                for error in exc.errors()
            )
            raise ValueError(f"model {model!r}: {problems}") from None
    return table


def call_cost(
    prices: dict[str, ModelPrice], model: str, prompt_tokens: int, completion_tokens: int
) -> Decimal:
    """USD cost of one call, rounded to a millionth of a dollar; 0 for a model without a price."""
    price = prices.get(model)
    if price is None:
        if prices and model not in _unpriced_logged:
            _unpriced_logged.add(model)
            logger.warning("LLM model %r has no entry in LLM_PRICES: its calls are accounted at $0", model)
        return Decimal("0")
    cost = (price.prompt_per_1k * prompt_tokens + price.completion_per_1k * completion_tokens) / 1000
    return cost.quantize(COST_QUANTUM)
