"""The distillation day of a moment, in the configured time zone and daily time."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from app.errors import ValidationError
from app.evolve.daily import daily_job_id, distillation_day, parse_day

UTC_ZONE = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 10, 1, 59, 59, tzinfo=UTC), date(2026, 3, 9)),  # before today's slot
        (datetime(2026, 3, 10, 2, 0, tzinfo=UTC), date(2026, 3, 10)),  # at the slot
        (datetime(2026, 3, 10, 23, 59, tzinfo=UTC), date(2026, 3, 10)),
    ],
)
def test_day_whose_slot_most_recently_passed(now: datetime, expected: date) -> None:
    assert distillation_day(now, time(2, 0), UTC_ZONE) == expected


def test_day_is_local_to_the_configured_time_zone() -> None:
    # 02:00 in Shanghai (UTC+8) is 18:00 UTC the evening before
    assert distillation_day(datetime(2026, 3, 9, 17, 59, tzinfo=UTC), time(2, 0), SHANGHAI) == date(
        2026, 3, 9
    )
    assert distillation_day(datetime(2026, 3, 9, 18, 0, tzinfo=UTC), time(2, 0), SHANGHAI) == date(
        2026, 3, 10
    )


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValidationError, match="now: must be timezone-aware"):
        distillation_day(datetime(2026, 3, 10, 2, 0), time(2, 0), UTC_ZONE)


def test_daily_job_id_names_day_and_group() -> None:
    assert daily_job_id("group-7", date(2026, 3, 10)) == "evolve:daily:2026-03-10:group-7"


def test_parse_day() -> None:
    assert parse_day(None) is None
    assert parse_day("2026-03-10") == date(2026, 3, 10)
    with pytest.raises(ValidationError, match="day: must be an ISO date"):
        parse_day("yesterday")
