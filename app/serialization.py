"""Job and result serialisation for arq: msgpack, never pickle.

arq pickles by default, which turns write access to Redis into code execution. Both the worker and
every pool that enqueues use these two functions. Values msgpack cannot encode natively (datetimes,
exceptions in failed results) are encoded as readable strings rather than rejected, so a failure
result is still stored for operators.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import msgpack


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def serialize(value: Any) -> bytes:
    """Encode a job or result dict as msgpack."""
    packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
    return packed


def deserialize(payload: bytes) -> Any:
    """Decode msgpack written by `serialize`; arrays come back as lists."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False)
