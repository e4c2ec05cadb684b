"""arq `RedisSettings` from our settings: password, database and TLS honoured."""

from __future__ import annotations

from arq.connections import RedisSettings

from app.config import Settings


def build_redis_settings(settings: Settings) -> RedisSettings:
    """The connection arq and our own Redis calls use; `REDIS_URL` wins over the parts."""
    if settings.redis_url is not None:
        redis = RedisSettings.from_dsn(settings.redis_url.get_secret_value())
    else:
        redis = RedisSettings(
            host=settings.redis_host,
            port=settings.redis_port,
            database=settings.redis_db,
            password=settings.redis_password.get_secret_value() if settings.redis_password else None,
            ssl=settings.redis_ssl,
        )
    redis.conn_retries = settings.redis_connect_retries
    redis.conn_retry_delay = 1
    return redis
