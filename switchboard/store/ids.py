"""Call ids: ULIDs (48-bit millisecond time + 80 random bits, Crockford base32).

They sort by creation time as plain strings, which keeps keyset pagination and
log grepping simple, and need no coordination between processes.
"""

from __future__ import annotations

import secrets
from datetime import datetime

__all__ = ["new_call_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_call_id(at: datetime) -> str:
    """A 26-character ULID for a call created at ``at`` (an aware datetime)."""
    millis = int(at.timestamp() * 1000)
    value = (millis << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
