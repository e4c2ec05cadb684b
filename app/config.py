"""Settings: every operator knob, read from the environment and `.env`, validated at start-up.

A bad value stops the process with one line naming the variable, the value and what is allowed
(`load_settings` turns pydantic's report into that line). Secret values are `SecretStr` and are
never echoed back, not even in an error.
"""

from __future__ import annotations

import re
from datetime import time
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError
from app.llm.pricing import ModelPrice, parse_price_table

FOLD_BATCH_OFFLINE = 50  # L2_FOLD_BATCH_CHATS default with the offline model (measured: see benchmarks)
FOLD_BATCH_REMOTE = 5  # ... with a remote model: a batch's concurrent calls stay within usual rate limits
SCAN_INTERVALS_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)  # divisors of an hour: cron-able evenly
_SECRET_FIELDS = {"redis_password", "postgres_password", "database_url", "redis_url", "llm_api_key"}
_DAILY_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class Settings(BaseSettings):
    """All settings; env names are the field names upper-cased (`L2_QUEUE_MAX_LEN`, ...)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        validate_default=True,
        env_ignore_empty=True,  # VAR= means unset
    )

    # --- Redis: one REDIS_URL, or the parts -------------------------------------------------
    redis_url: SecretStr | None = None
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_password: SecretStr | None = None
    redis_db: int = Field(0, ge=0, le=15)
    redis_ssl: bool = False
    redis_connect_retries: int = Field(5, ge=0)  # bounded retries before start-up gives up

    # --- Postgres: one DATABASE_URL, or the parts -------------------------------------------
    database_url: SecretStr | None = None
    postgres_host: str = "127.0.0.1"
    postgres_port: int = Field(5432, ge=1, le=65535)
    postgres_user: str = "postgres"
    postgres_password: SecretStr | None = None
    postgres_db: str = "memory_worker"
    db_pool_size: int = Field(10, ge=1)
    db_connect_retries: int = Field(5, ge=0)
    # Off: a ping costs extra round trips per checkout (it halved single-message recording); a dead
    # connection is instead detected on use, the pool is recycled and the job retries. Turn it on
    # behind proxies that silently drop idle connections.
    db_pool_pre_ping: bool = False

    # --- Worker (arq) -------------------------------------------------------------------------
    arq_queue_name: str = Field("arq:queue", min_length=1)
    worker_max_jobs: int = Field(20, ge=1)
    worker_poll_delay_seconds: float = Field(0.05, gt=0, le=10)  # arq default 0.5 s adds ~250 ms p50 latency
    worker_job_timeout_seconds: int = Field(300, ge=1)  # default timeout of a job; also bounds crash recovery
    worker_max_tries: int = Field(5, ge=1)  # tries of a job that raises Retry before it is recorded as failed
    worker_keep_result_seconds: int = Field(3600, ge=0)
    worker_health_check_interval_seconds: int = Field(60, ge=1)

    # --- L2 topic memory ------------------------------------------------------------------------
    l2_queue_trigger_threshold: int = Field(10, ge=1)  # pending messages that make a chat due at once
    l2_force_update_after_minutes: int = Field(60, ge=1)  # a chat with pending messages is due after this
    l2_scan_interval_minutes: int = 5  # the due-chat scan cron; must divide an hour
    l2_queue_max_len: int = Field(200, ge=1)  # messages folded by one update at most
    l2_job_timeout_seconds: int = Field(120, ge=1)
    l2_lock_wait_seconds: float = Field(30.0, gt=0)  # an update waits this long for the chat's row lock
    # chats one update job folds at most: its own, plus other chats whose queued updates have not
    # started yet (taken off the queue); 1 = one chat per job; unset = 50 offline, 5 with a remote
    # model (each chat is one model call; a batch makes its calls concurrently)
    l2_fold_batch_chats: int | None = Field(None, ge=1, le=500)
    message_max_bytes: int = Field(16384, ge=1)  # UTF-8 size limit of one message's content

    # --- Evolve / daily consensus -----------------------------------------------------------------
    evolve_daily_time: str = "02:00"  # HH:MM, local to EVOLVE_TIMEZONE
    evolve_timezone: str = "UTC"
    evolve_job_timeout_seconds: int = Field(600, ge=1)

    # --- Long tasks -------------------------------------------------------------------------------
    long_task_poll_batch_size: int = Field(5, ge=1)
    long_task_lock_timeout_seconds: int = Field(1800, ge=10)  # lease; a dead worker's task is taken after it
    # bounds one step; also, as arq's longest timeout, how long a killed worker's arq job waits to re-run
    long_task_job_timeout_seconds: int = Field(900, ge=1)
    long_task_heartbeat_seconds: int = Field(60, ge=1)  # lease renewal during a step; at most half the lease
    long_task_run_budget_seconds: int = Field(300, ge=1)  # a job starts new steps this long, then releases
    # a step retry due within this long gets a worker run deferred to its time, so its backoff is
    # kept instead of waiting for the minute poll; 0 = retries wait for the poll
    long_task_retry_kick_seconds: int = Field(60, ge=0, le=3600)
    long_task_max_attempts: int = Field(5, ge=1)  # tries of one step, unless the task type says otherwise
    long_task_max_state_visits: int = Field(100, ge=1)  # visits of one state before a task fails as looping
    long_task_type_modules: str = ""  # comma-separated modules whose TASK_TYPES a worker registers at start
    long_task_export_dir: str = "exports"  # directory export_memories writes its JSON Lines files into

    # --- LLM --------------------------------------------------------------------------------------
    llm_provider: Literal["offline", "openai"] = "offline"  # LLM_BASE_URL alone implies openai
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str | None = None
    llm_timeout_seconds: float = Field(60.0, gt=0)  # one HTTP call; a timeout is transient (the job retries)
    # repair requests after an invalid answer (bad JSON, unknown ids), within one try of the job;
    # transport faults are never retried in-call: the job retries them with backoff (WORKER_MAX_TRIES)
    llm_max_retries: int = Field(1, ge=0, le=5)
    llm_max_input_tokens: int = Field(8000, ge=1024)  # estimated prompt tokens per call; more is split
    llm_temperature: float = Field(0.2, ge=0, le=2)
    llm_json_mode: bool = True  # send response_format=json_object; turn off for servers that reject it
    # JSON: model -> USD per 1k tokens, see app/llm/pricing.py; a model without a price costs 0
    llm_prices: Annotated[dict[str, ModelPrice], NoDecode] = Field(default_factory=dict)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss"):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Accept the usual spellings and always hand SQLAlchemy the asyncpg driver."""
        if value is None:
            return None
        url = value.get_secret_value()
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
            raise ValueError("must start with postgresql://, postgres:// or postgresql+asyncpg://")
        return SecretStr(f"postgresql+asyncpg://{rest}")

    @field_validator("llm_prices", mode="before")
    @classmethod
    def _price_table(cls, value: Any) -> dict[str, ModelPrice]:
        """Accept the JSON text (env) or a mapping; name the model and price at fault."""
        return parse_price_table(value)

    @field_validator("l2_scan_interval_minutes")
    @classmethod
    def _schedulable_interval(cls, value: int) -> int:
        if value not in SCAN_INTERVALS_MINUTES:
            raise ValueError(
                f"must divide an hour evenly: one of {', '.join(map(str, SCAN_INTERVALS_MINUTES))}"
            )
        return value

    @field_validator("evolve_daily_time")
    @classmethod
    def _daily_time(cls, value: str) -> str:
        if not _DAILY_TIME.match(value):
            raise ValueError("must be a 24-hour time HH:MM, such as 02:00")
        return value

    @field_validator("evolve_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name, such as UTC or Asia/Shanghai") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _base_url_implies_openai(cls, data: Any) -> Any:
        """Three lines of env (base URL, key, model) are enough to use an OpenAI-compatible server."""
        if isinstance(data, dict) and data.get("llm_base_url") and not data.get("llm_provider"):
            return {**data, "llm_provider": "openai"}
        return data

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Settings:
        if self.l2_queue_trigger_threshold > self.l2_queue_max_len:
            raise ValueError(
                f"L2_QUEUE_TRIGGER_THRESHOLD={self.l2_queue_trigger_threshold}: must not exceed "
                f"L2_QUEUE_MAX_LEN={self.l2_queue_max_len}"
            )
        if self.l2_lock_wait_seconds >= self.l2_job_timeout_seconds:
            raise ValueError(
                f"L2_LOCK_WAIT_SECONDS={self.l2_lock_wait_seconds:g}: must be less than "
                f"L2_JOB_TIMEOUT_SECONDS={self.l2_job_timeout_seconds}"
            )
        if self.long_task_heartbeat_seconds * 2 > self.long_task_lock_timeout_seconds:
            raise ValueError(
                f"LONG_TASK_HEARTBEAT_SECONDS={self.long_task_heartbeat_seconds}: must be at most half of "
                f"LONG_TASK_LOCK_TIMEOUT_SECONDS={self.long_task_lock_timeout_seconds}"
            )
        if self.long_task_run_budget_seconds >= self.long_task_job_timeout_seconds:
            raise ValueError(
                f"LONG_TASK_RUN_BUDGET_SECONDS={self.long_task_run_budget_seconds}: must be less than "
                f"LONG_TASK_JOB_TIMEOUT_SECONDS={self.long_task_job_timeout_seconds}"
            )
        if self.llm_provider == "openai":
            if not self.llm_model:
                raise ValueError("LLM_MODEL is required when LLM_PROVIDER=openai")
            if self.llm_api_key is None or not self.llm_api_key.get_secret_value():
                raise ValueError("LLM_API_KEY is required when LLM_PROVIDER=openai")
        return self

    # --- derived values -----------------------------------------------------------------------

    @property
    def sqlalchemy_url(self) -> str:
        """The asyncpg URL, password included: hand it to SQLAlchemy only, never to a log."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        password = (
            f":{quote(self.postgres_password.get_secret_value(), safe='')}" if self.postgres_password else ""
        )
        user = quote(self.postgres_user, safe="")
        if self.postgres_host.startswith("/"):  # a Unix-socket directory (the embedded server uses one)
            where = f"?host={quote(self.postgres_host)}&port={self.postgres_port}"
            return f"postgresql+asyncpg://{user}{password}@/{self.postgres_db}{where}"
        return f"postgresql+asyncpg://{user}{password}@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"

    @property
    def database_display(self) -> str:
        """Where the database is, without credentials: safe to log."""
        if self.database_url is None:
            return f"postgresql://{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"
        parts = urlsplit(self.sqlalchemy_url)
        host = parts.hostname or parse_qs(parts.query).get("host", [""])[0]
        return f"postgresql://{host}:{parts.port or ''}{parts.path}"

    @property
    def fold_batch_chats(self) -> int:
        """L2_FOLD_BATCH_CHATS, or its default for the configured model."""
        if self.l2_fold_batch_chats is not None:
            return self.l2_fold_batch_chats
        return FOLD_BATCH_OFFLINE if self.llm_provider == "offline" else FOLD_BATCH_REMOTE

    @property
    def daily_time(self) -> time:
        hour, minute = self.evolve_daily_time.split(":")
        return time(int(hour), int(minute))

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.evolve_timezone)


def _describe(error: dict[str, Any]) -> str:
    """One line for one pydantic error: variable, value (unless secret) and what is allowed."""
    field = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not field:  # a cross-field rule names its variables itself
        return message
    value = "<secret>" if field in _SECRET_FIELDS else repr(error.get("input"))
    return f"{field.upper()}={value}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings, raising `ConfigError` with one readable line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(error)) for error in exc.errors()]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing env."""
    return load_settings()
