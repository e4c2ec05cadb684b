"""The exception tree of memory-worker.

    AppError                   root: catch this to catch everything we raise on purpose
    ├── ConfigError            a setting is invalid; the process must not start
    ├── NotMigratedError       the database schema is not at the migration head
    ├── ValidationError        bad input from a caller (names the field); never retried
    ├── NotFoundError          an unknown chat, group or task
    ├── PermanentError         a job cannot succeed by retrying (bad answer, 4xx); recorded as failed
    └── TransientError         a passing fault (connection, timeout, 429/5xx); the job retries with backoff

A job turns `TransientError` (and driver-level connection errors) into `arq.Retry(defer=backoff)`
and records everything that finally fails in the failures table.
"""

from __future__ import annotations


class AppError(Exception):
    """memory-worker failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(AppError):
    """Invalid configuration."""


class NotMigratedError(AppError):
    """The database is not migrated to the latest revision: run `alembic upgrade head`."""


class ValidationError(AppError):
    """Invalid input."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class NotFoundError(AppError):
    """Not found."""


class PermanentError(AppError):
    """The job cannot succeed by retrying."""


class TransientError(AppError):
    """A passing fault; retrying may succeed."""

    def __init__(self, message: str | None = None, retry_after_seconds: float | None = None) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(message)
