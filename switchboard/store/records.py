"""What goes into the call store and what comes out of it, as frozen dataclasses.

Times are timezone-aware UTC datetimes; JSON values are plain ``dict`` /
``list`` / ``str`` / numbers. These are the store's whole vocabulary: no ORM
object ever leaves :mod:`switchboard.store.repository`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from switchboard.realtime_events import Usage

__all__ = [
    "CallDetail",
    "CallPage",
    "CallRecord",
    "Direction",
    "JSONObject",
    "NewCall",
    "TimelineEvent",
    "Turn",
]

Direction = Literal["outbound", "inbound", "web"]  # web: the browser is the phone
JSONObject = dict[str, object]


@dataclass(frozen=True, slots=True)
class NewCall:
    """A call to record before it is placed (outbound) or as it arrives (inbound)."""

    direction: Direction
    to: str
    from_: str
    instruction: str = ""
    voice: str | None = None
    greeting: str | None = None
    metadata: JSONObject = field(default_factory=dict)
    max_duration_s: int | None = None
    twilio_sid: str | None = None  # known at once for an inbound call: unique, so a
    # second delivery of its webhook cannot create a second record


@dataclass(frozen=True, slots=True)
class CallRecord:
    id: str  # a ULID: sorts by creation time
    direction: Direction
    to: str
    from_: str
    instruction: str
    voice: str | None
    greeting: str | None
    metadata: JSONObject
    max_duration_s: int | None
    status: str
    twilio_sid: str | None
    created_at: datetime
    updated_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from answer to end, like Twilio's ``Duration``; ``None`` if not both."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.answered_at).total_seconds())


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    kind: str  # "status", "phase", "interruption", "tool_call", "problem", ...
    at: datetime
    data: JSONObject


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of the transcript.

    ``state`` is ``pending`` (a caller turn reserved, transcript not in yet),
    ``transcribed`` or ``untranscribed`` (the call ended without one) for the caller,
    ``speaking`` / ``finished`` / ``interrupted`` for the agent. For an interrupted
    agent turn ``text`` is everything generated and ``heard_text`` the estimated part
    the caller heard (:func:`~switchboard.transcript.heard_prefix`); a reply still
    speaking when the call ended (its actor died, say) is interrupted with
    ``heard_text`` ``""`` and ``heard_ms`` None: nothing is known to have been heard.
    """

    item_id: str
    role: Literal["caller", "agent"]
    state: str
    text: str | None
    started_at: datetime
    ended_at: datetime | None = None
    previous_item_id: str | None = None
    heard_text: str | None = None
    heard_ms: int | None = None
    generated_ms: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.state == "interrupted"


@dataclass(frozen=True, slots=True)
class CallDetail:
    call: CallRecord
    timeline: tuple[TimelineEvent, ...]
    transcript: tuple[Turn, ...]  # conversation order
    usage: Usage  # summed over every response of the call
    cost_usd: Decimal  # estimate, see switchboard.store.pricing


@dataclass(frozen=True, slots=True)
class CallPage:
    calls: tuple[CallRecord, ...]  # newest first
    next_cursor: str | None  # pass to list_calls(cursor=...) for the next page
