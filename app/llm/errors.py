"""What a model call can raise: the job guard's two families, plus what accounting needs.

    TransientError (app.errors)
    └── LlmUnavailable          timeout, connection error, 429 (with Retry-After), 408/409, 5xx
    PermanentError (app.errors)
    ├── LlmRejected             400/401/403/404/413/422...: the request or credentials are wrong
    ├── LlmAnswerInvalid        the answer stayed invalid after the repair retries; keeps `raw_answer`
    └── LlmInputTooLarge        the fixed part of the prompt alone exceeds LLM_MAX_INPUT_TOKENS

Every one of them carries `usage`: one `Usage` per model call the failed operation made (the failing
call included, `ok=False`), so the job's failure path can account for calls that produced nothing
(`app.llm.accounting.record_failed_usage`). `app.failures.guard` stores `raw_answer` with the
recorded failure.
"""

from __future__ import annotations

from app.errors import PermanentError, TransientError
from app.llm.base import Usage


class LlmUnavailable(TransientError):
    """The LLM endpoint is unavailable for now; the job retries with backoff."""

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, usage: list[Usage] | None = None
    ) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)
        self.usage: list[Usage] = list(usage or [])


class LlmRejected(PermanentError):
    """The LLM endpoint refused the request; retrying the same request cannot succeed."""

    def __init__(self, message: str, *, status_code: int, usage: list[Usage] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.usage: list[Usage] = list(usage or [])


class LlmAnswerInvalid(PermanentError):
    """The model's answer is not valid JSON of the expected shape, or refers to unknown ids."""

    def __init__(self, message: str, *, raw_answer: str, usage: list[Usage] | None = None) -> None:
        super().__init__(message)
        self.raw_answer = raw_answer  # kept in job_failures.details["raw_answer"] by the guard
        self.usage: list[Usage] = list(usage or [])


class LlmInputTooLarge(PermanentError):
    """The prompt's fixed part (instructions and current memory) leaves no room within the budget."""

    def __init__(self, message: str, *, usage: list[Usage] | None = None) -> None:
        super().__init__(message)
        self.usage: list[Usage] = list(usage or [])
