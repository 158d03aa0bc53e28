"""Checks on values handed to the store, so bad input fails with a clear StoreInputError.

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

__all__ = [
    "aware",
    "count",
    "json_object",
    "short_text",
    "storable",
    "text_problem",
    "timeline_event",
]

MAX_COUNT = 2**31 - 1  # PostgreSQL's INTEGER: the same limit on both backends
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 and C1 controls, DEL and lone surrogates (PostgreSQL refuses NUL and surrogates;
# the rest would be stored, and garble every listing or log line that shows them).
_NOT_IN_A_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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
    """``value``, an identifier or a name (an item id, a phone number), refused if it
    holds a control character or a lone surrogate: the same on both backends. Not
    replaced, as :func:`storable` does in text: two ids differing there would be one."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise StoreInputError(f"{name} must be a non-empty string of at most {limit} characters")
    found = _NOT_IN_A_NAME.search(value)
    if found is not None:
        raise StoreInputError(
            f"{name} contains {_describe(found.group())} at position {found.start()}"
        )
    return value


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone UTF-16 surrogate (U+{ord(char):04X})"
    return "a NUL character" if char == "\x00" else f"a control character (U+{ord(char):04X})"


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


def timeline_event(
    kind: str, at: datetime, data: Mapping[str, object] | None
) -> tuple[str, datetime, dict[str, object]]:
    """A timeline event ``(kind, at, data)`` as the store will hold it."""
    return short_text("kind", kind, 32), aware("at", at), json_object("data", data)
