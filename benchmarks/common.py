"""What every benchmark shares: its own database and Redis db on the configured servers (parts or
URLs, so `make bench` also runs on the embedded servers), a fresh schema, and percentiles."""

from __future__ import annotations

import asyncio
import os

from alembic import command
from redis.asyncio import Redis

from app.config import Settings
from app.db.engine import create_engine
from app.db.models import Base
from app.db.schema_check import alembic_config
from app.redis_settings import build_redis_settings
from tests.support.settings import ensure_database, make_test_settings


def bench_settings(default_db: str, default_redis_db: int, **overrides: object) -> Settings:
    """`BENCH_POSTGRES_DB` / `BENCH_REDIS_DB` (or the benchmark's defaults) on the configured servers."""
    database = os.environ.get("BENCH_POSTGRES_DB", default_db)
    redis_db = int(os.environ.get("BENCH_REDIS_DB", str(default_redis_db)))
    return make_test_settings(database, redis_db=redis_db, **overrides)


async def recreate_database(settings: Settings) -> None:
    """Drop and create the benchmark's database, build the schema from the models, stamp it at head."""
    await ensure_database(settings, settings.postgres_db, recreate=True)
    engine = create_engine(settings)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    await engine.dispose()
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    await asyncio.to_thread(command.stamp, config, "head")  # alembic runs its own event loop


def redis_client(settings: Settings) -> Redis:
    """A plain redis-py client on the benchmark's Redis db."""
    redis = build_redis_settings(settings)
    host = redis.host if isinstance(redis.host, str) else redis.host[0][0]  # arq also allows sentinels
    return Redis(host=host, port=redis.port, db=redis.database, password=redis.password, ssl=redis.ssl)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, `fraction` in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]
