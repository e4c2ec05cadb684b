"""Recording input validation: every problem names the message index and the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.errors import ValidationError
from app.l2.schemas import NewMessage
from app.l2.validation import validate_chat_id, validate_messages

GOOD = NewMessage(chat_id="c", message_id="m", content="hi", sent_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_valid_messages_pass_through_in_order() -> None:
    other = {"chat_id": "c", "message_id": "m2", "content": "", "sent_at": GOOD.sent_at, "role": "system"}
    checked = validate_messages([GOOD, other], 100)
    assert checked[0] is GOOD and checked[1].role == "system"


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    assert validate_messages([_fields(content="é" * 50)], 100)  # 100 bytes: at the limit
    with pytest.raises(ValidationError, match=r"messages\[0\]\.content: is 102 bytes of UTF-8"):
        validate_messages([_fields(content="é" * 51)], 100)


def _fields(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"chat_id": "c", "message_id": "m", "content": "hi", "sent_at": GOOD.sent_at}
    return base | changes


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"chat_id": "   "}, "chat_id"),
        ({"chat_id": None}, "chat_id"),
        ({"message_id": 7}, "message_id"),
        ({"group_id": ""}, "group_id"),
        ({"user_name": "x" * 201}, "user_name"),
        ({"role": "USER"}, "role"),
        ({"content": None}, "content"),
        ({"content": "a\x00b"}, "content"),
        ({"content": "\udfff"}, "content"),
        ({"sent_at": "2026-01-01T00:00:00Z"}, "sent_at"),
        ({"sent_at": datetime(2026, 1, 1)}, "sent_at"),
    ],
)
def test_each_bad_field_is_named_with_its_index(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_messages([_fields(), _fields(), _fields(**changes)], 100)
    assert raised.value.field == f"messages[2].{field}"


def test_missing_required_fields_and_wrong_item_types_are_named() -> None:
    with pytest.raises(ValidationError, match=r"messages\[0\]\.content: is required"):
        validate_messages([{"chat_id": "c", "message_id": "m", "sent_at": GOOD.sent_at}], 100)
    with pytest.raises(ValidationError, match=r"messages\[0\]: must be a NewMessage or a mapping, not str"):
        validate_messages(["hello"], 100)  # type: ignore[list-item]


def test_a_chat_id_argument_is_checked_too() -> None:
    assert validate_chat_id("chat-1") == "chat-1"
    with pytest.raises(ValidationError, match="chat_id: must be a string, not int"):
        validate_chat_id(12)
