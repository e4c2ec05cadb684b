"""Input validation for recording: a whole batch is checked before anything is written.

Each problem raises `ValidationError(field, problem)` whose field names the batch index, such as
`messages[3].content`, so a service can tell which message and which field is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from app.errors import ValidationError
from app.l2.models import ID_LENGTH, ROLES
from app.l2.schemas import NewMessage

_FIELDS = frozenset(f.name for f in fields(NewMessage))


def _utf8_size(name: str, value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: Postgres would refuse them anyway
        raise ValidationError(name, "is not valid UTF-8 text (it contains a lone surrogate)") from None


def _check_id(name: str, value: Any, *, required: bool) -> None:
    if value is None:
        if required:
            raise ValidationError(name, "is required")
        return
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise ValidationError(name, "must not be empty")
    if len(value) > ID_LENGTH:
        raise ValidationError(name, f"must be at most {ID_LENGTH} characters, not {len(value)}")
    _utf8_size(name, value)
    if "\x00" in value:
        raise ValidationError(name, "must not contain NUL characters")


def _check_message(where: str, message: NewMessage, max_bytes: int) -> None:
    _check_id(f"{where}.chat_id", message.chat_id, required=True)
    _check_id(f"{where}.message_id", message.message_id, required=True)
    _check_id(f"{where}.group_id", message.group_id, required=False)
    _check_id(f"{where}.user_id", message.user_id, required=False)
    _check_id(f"{where}.user_name", message.user_name, required=False)
    if message.role not in ROLES:
        raise ValidationError(f"{where}.role", f"must be one of {', '.join(ROLES)}, not {message.role!r}")
    content = message.content
    if not isinstance(content, str):
        raise ValidationError(f"{where}.content", f"must be text (str), not {type(content).__name__}")
    size = _utf8_size(f"{where}.content", content)
    if size > max_bytes:
        raise ValidationError(
            f"{where}.content", f"is {size} bytes of UTF-8, more than MESSAGE_MAX_BYTES={max_bytes}"
        )
    if "\x00" in content:
        raise ValidationError(f"{where}.content", "must not contain NUL characters")
    if not isinstance(message.sent_at, datetime):
        raise ValidationError(f"{where}.sent_at", f"must be a datetime, not {type(message.sent_at).__name__}")
    if message.sent_at.utcoffset() is None:
        raise ValidationError(f"{where}.sent_at", "must be timezone-aware (for example datetime.now(UTC))")


def _as_message(where: str, item: NewMessage | Mapping[str, Any]) -> NewMessage:
    if isinstance(item, NewMessage):
        return item
    if not isinstance(item, Mapping):
        raise ValidationError(where, f"must be a NewMessage or a mapping, not {type(item).__name__}")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise ValidationError(f"{where}.{unknown[0]}", "is not a message field")
    for name in ("chat_id", "message_id", "content", "sent_at"):
        if name not in item:
            raise ValidationError(f"{where}.{name}", "is required")
    return NewMessage(**item)


def validate_messages(
    items: Iterable[NewMessage | Mapping[str, Any]], max_bytes: int, *, name: str = "messages"
) -> list[NewMessage]:
    """Check every message and return them; raises on the first problem, before any write."""
    checked: list[NewMessage] = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        message = _as_message(where, item)
        _check_message(where, message, max_bytes)
        checked.append(message)
    if not checked:
        raise ValidationError(name, "must contain at least one message")
    return checked


def validate_chat_id(chat_id: Any) -> str:
    """A chat id argument (of a read or a trigger)."""
    _check_id("chat_id", chat_id, required=True)
    return str(chat_id)
