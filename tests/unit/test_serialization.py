"""Jobs travel as msgpack, never pickle."""

from __future__ import annotations

from datetime import UTC, datetime

from app.serialization import deserialize, serialize


def test_round_trip_of_a_job_dict() -> None:
    job = {"t": 1, "f": "task_update_topic_memory", "a": ["chat-1"], "k": {}, "et": 1700000000000}
    payload = serialize(job)
    assert payload[:1] != b"\x80"  # a pickle starts with the PROTO opcode
    assert deserialize(payload) == job


def test_values_msgpack_cannot_encode_become_readable_strings() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    decoded = deserialize(serialize({"r": ValueError("bad chat"), "w": when}))
    assert decoded == {"r": "ValueError: bad chat", "w": "2026-01-02T03:04:05+00:00"}
