"""Checks on values handed to the store, so bad input fails with a clear StoreError.

They run before any SQL, so the same input fails the same way on SQLite (which
does not enforce lengths) and PostgreSQL (which does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from switchboard.errors import StoreInputError

__all__ = ["aware", "count", "json_object", "short_text", "storable", "text_problem"]

MAX_COUNT = 2**31 - 1  # PostgreSQL's INTEGER: the same limit on both backends
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as it is, or ``None``: PostgreSQL refuses NUL in
    text and JSON, and a lone UTF-16 surrogate (a string cut inside an emoji) is not
    Unicode text at all: it would be stored, then fail every response that holds it."""
    if "\x00" in value:
        return f"contains a NUL character at position {value.index(chr(0))}"
    if not value.isascii():
        found = _SURROGATE.search(value)
        if found is not None:
            return (
                f"contains a lone UTF-16 surrogate (U+{ord(found.group()):04X}) at position "
                f"{found.start()}: not valid Unicode"
            )
    return None


def storable(value: str) -> str:
    """``value`` with what no backend can hold (NUL, lone surrogates) replaced by U+FFFD,
    for text from the services (a transcript): kept, not refused."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value if value.isascii() else _SURROGATE.sub("\ufffd", value)


def aware(name: str, value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes are refused (their zone is a guess)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise StoreInputError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def short_text(name: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise StoreInputError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def count(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise StoreInputError(f"{name} must be an integer from 0 to {MAX_COUNT}, got {value!r}")
    return value


def json_object(name: str, value: Mapping[str, object] | None) -> dict[str, object]:
    """A copy of ``value`` that is known to serialize as a JSON object."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StoreInputError(f"{name} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        # A round trip: what the database will hold, with tuples as lists.
        copied = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreInputError(f"{name} is not JSON-serializable: {exc}") from exc
    if not isinstance(copied, dict):  # pragma: no cover - dict in, dict out
        raise StoreInputError(f"{name} must be a JSON object")
    return {storable(key): _storable_json(item) for key, item in copied.items()}


def _storable_json(value: Any) -> Any:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [_storable_json(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): _storable_json(item) for key, item in value.items()}
    return value
