"""Call ids: ULIDs (48-bit millisecond time + 80 random bits, Crockford base32).

They sort by creation time as plain strings, which keeps keyset pagination and
log grepping simple, and need no coordination between processes.
"""

from __future__ import annotations

import secrets
from datetime import datetime

__all__ = ["is_call_id", "new_call_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_call_id(at: datetime) -> str:
    """A 26-character ULID for a call created at ``at`` (an aware datetime)."""
    millis = int(at.timestamp() * 1000)
    value = (millis << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def is_call_id(text: str) -> bool:
    """Whether ``text`` could be a call id: anything else names no call (and a NUL in
    it would make PostgreSQL refuse the query rather than find nothing)."""
    return len(text) == 26 and all(c in _CROCKFORD for c in text)
