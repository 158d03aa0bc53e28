"""Checks on values handed to the store, so bad input fails with a clear StoreError.

They run before any SQL, so the same input fails the same way on SQLite (which
does not enforce lengths) and PostgreSQL (which does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime

from switchboard.errors import StoreError

__all__ = ["aware", "count", "json_object", "short_text"]


def aware(name: str, value: datetime) -> datetime:
    """``value`` in UTC; naive datetimes are refused (their zone is a guess)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise StoreError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def short_text(name: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise StoreError(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def count(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def json_object(name: str, value: Mapping[str, object] | None) -> dict[str, object]:
    """A copy of ``value`` that is known to serialize as a JSON object."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StoreError(f"{name} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        # A round trip: what the database will hold, with tuples as lists.
        copied = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{name} is not JSON-serializable: {exc}") from exc
    if not isinstance(copied, dict):  # pragma: no cover - dict in, dict out
        raise StoreError(f"{name} must be a JSON object")
    return copied
