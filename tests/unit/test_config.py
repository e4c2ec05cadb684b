"""Settings: defaults, environment overrides and one clear line per invalid value."""

from __future__ import annotations

import pytest

from app.config import Settings, load_settings
from app.errors import ConfigError

ENV_PREFIXES = ("REDIS_", "POSTGRES_", "DATABASE_URL", "L2_", "LLM_", "EVOLVE_", "LONG_TASK_", "WORKER_")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> None:
    """No inherited settings and no `.env`: every test states its own environment."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]


def test_defaults() -> None:
    settings = Settings()
    assert settings.l2_queue_trigger_threshold == 10
    assert settings.l2_force_update_after_minutes == 60
    assert settings.l2_scan_interval_minutes == 5
    assert settings.l2_queue_max_len == 200
    assert settings.evolve_daily_time == "02:00"
    assert settings.evolve_timezone == "UTC"
    assert settings.long_task_poll_batch_size == 5
    assert settings.long_task_lock_timeout_seconds == 1800
    assert settings.llm_provider == "offline"
    assert settings.sqlalchemy_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/memory_worker"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2_QUEUE_TRIGGER_THRESHOLD", "25")
    monkeypatch.setenv("L2_SCAN_INTERVAL_MINUTES", "15")
    monkeypatch.setenv("EVOLVE_DAILY_TIME", "03:30")
    monkeypatch.setenv("EVOLVE_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("POSTGRES_PASSWORD", "p@ss/word")
    settings = load_settings()
    assert settings.l2_queue_trigger_threshold == 25
    assert settings.l2_scan_interval_minutes == 15
    assert (settings.daily_time.hour, settings.daily_time.minute) == (3, 30)
    assert str(settings.tzinfo) == "Asia/Shanghai"
    assert (
        settings.sqlalchemy_url
        == "postgresql+asyncpg://postgres:p%40ss%2Fword@db.internal:5432/memory_worker"
    )


def test_env_file_is_read(tmp_path: pytest.TempPathFactory) -> None:
    with open(".env", "w") as env_file:
        env_file.write("L2_QUEUE_MAX_LEN=300\n")
    assert load_settings().l2_queue_max_len == 300


def test_database_url_is_normalised_to_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u:secret@h:6543/d")
    settings = load_settings()
    assert settings.sqlalchemy_url == "postgresql+asyncpg://u:secret@h:6543/d"
    assert "secret" not in settings.database_display


def test_unix_socket_postgres_host() -> None:
    settings = load_settings(postgres_host="/run/pg", postgres_db="x")
    assert settings.sqlalchemy_url == "postgresql+asyncpg://postgres@/x?host=/run/pg&port=5432"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "L2_QUEUE_TRIGGER_THRESHOLD",
            "0",
            "L2_QUEUE_TRIGGER_THRESHOLD='0': Input should be greater than or equal to 1",
        ),
        ("L2_QUEUE_MAX_LEN", "-5", "L2_QUEUE_MAX_LEN='-5': Input should be greater than or equal to 1"),
        (
            "L2_FORCE_UPDATE_AFTER_MINUTES",
            "abc",
            "L2_FORCE_UPDATE_AFTER_MINUTES='abc': Input should be a valid integer",
        ),
        ("L2_SCAN_INTERVAL_MINUTES", "7", "L2_SCAN_INTERVAL_MINUTES='7': must divide an hour evenly"),
        ("L2_SCAN_INTERVAL_MINUTES", "0", "L2_SCAN_INTERVAL_MINUTES='0': must divide an hour evenly"),
        ("EVOLVE_TIMEZONE", "Mars/Olympus", "EVOLVE_TIMEZONE='Mars/Olympus': must be an IANA time zone name"),
        ("EVOLVE_DAILY_TIME", "25:00", "EVOLVE_DAILY_TIME='25:00': must be a 24-hour time HH:MM"),
        (
            "LONG_TASK_POLL_BATCH_SIZE",
            "0",
            "LONG_TASK_POLL_BATCH_SIZE='0': Input should be greater than or equal to 1",
        ),
        (
            "LONG_TASK_LOCK_TIMEOUT_SECONDS",
            "5",
            "LONG_TASK_LOCK_TIMEOUT_SECONDS='5': Input should be greater than",
        ),
        ("WORKER_MAX_JOBS", "0", "WORKER_MAX_JOBS='0': Input should be greater than or equal to 1"),
        ("REDIS_PORT", "70000", "REDIS_PORT='70000': Input should be less than or equal to 65535"),
        ("LLM_PROVIDER", "magic", "LLM_PROVIDER='magic': Input should be 'offline' or 'openai'"),
        ("REDIS_URL", "http://x", "REDIS_URL=<secret>: must start with redis:// or rediss://"),
    ],
)
def test_each_invalid_value_names_variable_value_and_rule(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "\n" not in message
    assert expected in message


def test_threshold_above_max_len_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2_QUEUE_TRIGGER_THRESHOLD", "300")
    with pytest.raises(
        ConfigError, match="L2_QUEUE_TRIGGER_THRESHOLD=300: must not exceed L2_QUEUE_MAX_LEN=200"
    ):
        load_settings()


def test_openai_provider_requires_model_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDER", "openai")
    with pytest.raises(ConfigError, match="LLM_MODEL is required when LLM_PROVIDER=openai"):
        load_settings()
    monkeypatch.setenv("LLM_MODEL", "gpt-4o-mini")
    with pytest.raises(ConfigError, match="LLM_API_KEY is required when LLM_PROVIDER=openai"):
        load_settings()


def test_secrets_never_appear_in_errors_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:hunter2@h/d")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)
    assert "DATABASE_URL=<secret>" in str(raised.value)
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("POSTGRES_PASSWORD", "hunter2")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter3")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "hunter3" not in repr(settings)
    assert "hunter2" not in settings.database_display


def test_three_lines_of_env_select_an_openai_compatible_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("LLM_API_KEY", "sk-local")
    monkeypatch.setenv("LLM_MODEL", "qwen2.5")
    assert load_settings().llm_provider == "openai"
    monkeypatch.setenv("LLM_PROVIDER", "offline")  # an explicit choice wins
    assert load_settings().llm_provider == "offline"


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("REDIS_URL", "")
    settings = load_settings()
    assert settings.database_url is None and settings.redis_url is None


def test_lock_wait_must_be_shorter_than_the_update_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2_LOCK_WAIT_SECONDS", "200")
    with pytest.raises(
        ConfigError, match="L2_LOCK_WAIT_SECONDS=200: must be less than L2_JOB_TIMEOUT_SECONDS=120"
    ):
        load_settings()
