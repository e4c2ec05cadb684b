"""Reading a model's answer: JSON extraction and readable validation problems for the repair prompt."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError as PydanticValidationError

MAX_PROBLEMS = 20  # more than this in a repair prompt helps nobody
_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n(.*)\n```\s*$", re.DOTALL)


class AnswerProblems(Exception):
    """An answer we cannot use; `problems` are sentences the model can act on."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            self.problems.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
        super().__init__("; ".join(self.problems))


def load_json_answer(raw: str) -> Any:
    """The JSON value of `raw`; a Markdown code fence around it (a common habit) is tolerated."""
    text = raw.strip()
    if not text:
        raise AnswerProblems(["the answer is empty: answer with one JSON object"])
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerProblems(
            [f"the answer is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
        ) from None


def describe_pydantic_errors(exc: PydanticValidationError) -> list[str]:
    """`topics[2].title: Field required` style lines."""
    problems: list[str] = []
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        problems.append(f"{path or 'answer'}: {error['msg']}")
    return problems


class NewRef:
    """Provisional references (`new-1`, ...) for topics or items proposed during one multi-call run.

    They let a later call refer to what an earlier call proposed; they never reach the database (the
    final drafts and changes carry `None` for them) and never collide with an id we showed.
    """

    def __init__(self, taken: list[str]) -> None:
        self._taken = set(taken)
        self._next = 1

    def __call__(self) -> str:
        while f"new-{self._next}" in self._taken:
            self._next += 1
        ref = f"new-{self._next}"
        self._taken.add(ref)
        return ref
