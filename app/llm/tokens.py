"""A deterministic token estimate, and truncation to a token budget with a visible marker.

We do not ship a tokenizer per model (teams run OpenAI, DeepSeek, Qwen, Llama...): the budget only
needs to be safe and predictable, so the estimate is deliberately simple and slightly pessimistic:

- every CJK character (Han ideographs, kana, Hangul, CJK punctuation, full-width forms) counts 1 token;
- every other run of characters counts ceil(length / 4) tokens (English averages ~4 chars per token).

Real tokenizers give about the same for English and fewer for Chinese (1 token per 1-1.5 chars), so
prompts sized by this estimate fit the configured LLM_MAX_INPUT_TOKENS.
"""

from __future__ import annotations

from dataclasses import dataclass

TRUNCATION_MARKER = " […truncated {dropped} characters]"

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x30FF),  # CJK punctuation, Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Hangul compatibility, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x20000, 0x3FFFF),  # CJK extensions B..H
)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def estimate_tokens(text: str) -> int:
    """Tokens `text` is taken to cost: 1 per CJK character, ceil(n/4) per run of other characters."""
    tokens = 0
    run = 0
    for char in text:
        if is_cjk(char):
            tokens += 1 + (run + 3) // 4
            run = 0
        else:
            run += 1
    return tokens + (run + 3) // 4


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """`text` unchanged if it fits in `max_tokens`, else its head plus a marker saying how much was cut.

    The result (marker included) costs at most `max_tokens` by `estimate_tokens`.
    """
    if estimate_tokens(text) <= max_tokens:
        return text
    # the marker's own cost, with room for a long number
    room = max(max_tokens - estimate_tokens(TRUNCATION_MARKER.format(dropped=10**9)), 0)
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits `room` (estimate_tokens grows with the prefix)
        middle = (low + high + 1) // 2
        if estimate_tokens(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low] + TRUNCATION_MARKER.format(dropped=len(text) - low)


@dataclass(frozen=True)
class Budget:
    """How LLM_MAX_INPUT_TOKENS is shared within one call (estimated tokens, see above).

    - a repair request re-sends the prompt plus the invalid answer and the problems, so when repairs
      are enabled a quarter of the budget is kept for them and the first request gets the rest;
    - one message may take at most an eighth of the budget: longer ones are cut with a marker, so a
      single huge message cannot crowd out the rest of the backlog.
    """

    max_input_tokens: int
    repairs: bool = True

    @property
    def repair_reserve(self) -> int:
        return self.max_input_tokens // 4 if self.repairs else 0

    @property
    def request_tokens(self) -> int:
        """What the first request of a call (instructions, memory, messages) may cost."""
        return self.max_input_tokens - self.repair_reserve

    @property
    def message_tokens(self) -> int:
        """What one message (or one topic, for distillation) may cost before it is truncated."""
        return self.max_input_tokens // 8
