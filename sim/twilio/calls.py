"""The life of one call, outbound API or inbound, as a table (protocols.md 2.4, 2.5, 2.8).

Theory of operation
-------------------
A call is created ``queued``. When its CPS slot comes (``dial_at``) it is
*dialed* (the ``initiated`` callback; the resource stays ``queued``, since
``initiated`` is not a resource status), then rings, then the destination's
scripted behaviour decides: a human or a voicemail answers after
``answer_after_s``; ``busy`` reports busy after ``answer_after_s`` of
ringing; ``failed`` fails before ringing; nobody answering (or an answer
slower than ``Timeout``) gives ``no-answer`` at ``Timeout``. An answered call
ends (``completed``) when either side hangs up, when ``TimeLimit`` or the
scenario's ``max_call_s`` runs out, or when its TwiML runs out; an
application error (TwiML that cannot be fetched or parsed) makes it
``failed``. ``canceled`` only comes from the REST API before the answer.

An inbound call (``CallPlan.inbound``) is not queued for CPS ("Inbound calls
... are not limited by CPS", protocols.md 2.8): it rings at once and stays
ringing until the shell has fetched the number's TwiML, which either answers
it (``answer``), rejects it (``reject``: ``busy`` or ``no-answer``, as
twilio.com/docs/voice/twiml/reject says of a first-verb ``<Reject>``) or,
when it cannot be fetched, fails it (``fail``).

``CallMachine`` is pure: time comes in as ``now`` (seconds, any monotonic
origin). Drive it with ``tick(now)`` at ``next_deadline`` and with the
external moves ``cancel``/``hang_up``/``fail`` (inbound, ``answer``/``reject``
too); every call returns the ``Transition``\\ s that happened, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from switchboard.errors import IllegalTransition

__all__ = [
    "TERMINAL",
    "TRANSITIONS",
    "CallEvent",
    "CallMachine",
    "CallPlan",
    "CallStatus",
    "Transition",
]

RING_AFTER_S = 0.05  # from dialing to the first ring; real carriers take ~1 s


class CallStatus(StrEnum):
    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    BUSY = "busy"
    FAILED = "failed"
    NO_ANSWER = "no-answer"
    CANCELED = "canceled"


TERMINAL = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.FAILED,
        CallStatus.NO_ANSWER,
        CallStatus.CANCELED,
    }
)


class CallEvent(StrEnum):
    DIALED = "dialed"  # left the CPS queue: the "initiated" callback
    RANG = "rang"
    ANSWERED = "answered"
    REPORTED_BUSY = "reported-busy"
    NOT_ANSWERED = "not-answered"
    UNREACHABLE = "unreachable"
    CANCELED = "canceled"
    HUNG_UP = "hung-up"
    FAILED = "failed"


S, E = CallStatus, CallEvent
TRANSITIONS: dict[tuple[CallStatus, CallEvent], CallStatus] = {
    (S.QUEUED, E.DIALED): S.QUEUED,
    (S.QUEUED, E.RANG): S.RINGING,
    (S.QUEUED, E.UNREACHABLE): S.FAILED,
    (S.QUEUED, E.CANCELED): S.CANCELED,
    (S.RINGING, E.ANSWERED): S.IN_PROGRESS,
    (S.RINGING, E.REPORTED_BUSY): S.BUSY,
    (S.RINGING, E.NOT_ANSWERED): S.NO_ANSWER,
    (S.RINGING, E.CANCELED): S.CANCELED,
    (S.RINGING, E.FAILED): S.FAILED,  # inbound: the voice URL could not be fetched
    (S.IN_PROGRESS, E.HUNG_UP): S.COMPLETED,
    (S.IN_PROGRESS, E.FAILED): S.FAILED,
}
del S, E


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What the destination will do, from the scenario and the create() parameters."""

    outcome: str = "human"  # human | busy | no-answer | failed | voicemail
    answer_after_s: float = 1.0
    hangup_after_s: float | None = None  # the callee hangs up this long after answering
    timeout_s: float = 60.0  # Timeout: ring this long before no-answer
    time_limit_s: float = 14400.0  # TimeLimit
    max_call_s: float = 300.0  # the scenario's cap on an answered call
    inbound: bool = False  # rings at once; answered or rejected by its TwiML, not the plan


@dataclass(frozen=True, slots=True)
class Transition:
    event: CallEvent
    before: CallStatus
    after: CallStatus
    at: float
    reason: str = ""  # who or what ended the call: caller, api, time-limit, twiml-ended...


class CallMachine:
    """One call's status, deadlines and legal moves (see the module docstring)."""

    def __init__(self, plan: CallPlan, dial_at: float) -> None:
        self.plan = plan
        self.status = CallStatus.QUEUED
        self.dialed_at: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason = ""
        self._time_limit_s = plan.time_limit_s
        # (deadline, event, reason); at most one pending at a time before the answer
        self._pending: tuple[float, CallEvent, str] | None = (dial_at, CallEvent.DIALED, "")

    # -- queries -------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL

    @property
    def next_deadline(self) -> float | None:
        if self.ended:
            return None
        if self.status is CallStatus.IN_PROGRESS:
            return self._hangup_deadline()[0]
        return None if self._pending is None else self._pending[0]

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Transition]:
        out: list[Transition] = []
        while (deadline := self.next_deadline) is not None and deadline <= now:
            if self.status is CallStatus.IN_PROGRESS:
                at, reason = self._hangup_deadline()
                out.append(self._move(CallEvent.HUNG_UP, at, reason))
                continue
            assert self._pending is not None
            at, event, reason = self._pending
            self._pending = None
            out.append(self._move(event, at, reason))
            self._schedule_after(event, at)
        return out

    def set_time_limit(self, seconds: float) -> None:
        """``update(time_limit=...)``: counted from the answer, like the original."""
        self._time_limit_s = seconds

    # -- external moves ------------------------------------------------------------------

    def cancel(self, now: float) -> Transition:
        self._pending = None
        return self._move(CallEvent.CANCELED, now, "api")

    def hang_up(self, now: float, reason: str) -> Transition:
        return self._move(CallEvent.HUNG_UP, now, reason)

    def fail(self, now: float, reason: str) -> Transition:
        self._pending = None
        return self._move(CallEvent.FAILED, now, reason)

    def answer(self, now: float) -> Transition:
        """An inbound call's TwiML picks it up."""
        self._pending = None
        return self._move(CallEvent.ANSWERED, now, "")

    def abandon(self, now: float) -> Transition:
        """An inbound caller hangs up while the call rings (its TwiML not yet answered):
        Twilio reports ``no-answer``, not ``canceled``, which only the REST API causes
        (observed: stackoverflow.com/questions/78683402, a ringing voice-URL fetch then
        a ``no-answer`` status callback)."""
        self._pending = None
        return self._move(CallEvent.NOT_ANSWERED, now, "caller")

    def reject(self, now: float, busy: bool) -> Transition:
        """An inbound call's TwiML starts with ``<Reject>``: never answered."""
        self._pending = None
        event = CallEvent.REPORTED_BUSY if busy else CallEvent.NOT_ANSWERED
        return self._move(event, now, "rejected")

    # -- internals -----------------------------------------------------------------------

    def _move(self, event: CallEvent, at: float, reason: str) -> Transition:
        after = TRANSITIONS.get((self.status, event))
        if after is None or (event is CallEvent.DIALED and self.dialed_at is not None):
            raise IllegalTransition(self.status, event)
        before, self.status = self.status, after
        match event:
            case CallEvent.DIALED:
                self.dialed_at = at
            case CallEvent.ANSWERED:
                self.answered_at = at
        if self.ended:
            self.ended_at = at
            self.end_reason = reason or event.value
        return Transition(event, before, after, at, reason)

    def _schedule_after(self, event: CallEvent, at: float) -> None:
        plan = self.plan
        match event, plan.outcome:
            case CallEvent.DIALED, _ if plan.inbound:
                self._pending = (at, CallEvent.RANG, "")
            case CallEvent.RANG, _ if plan.inbound:
                self._pending = None  # the shell answers, rejects or fails it
            case CallEvent.DIALED, "failed":
                self._pending = (at + plan.answer_after_s, CallEvent.UNREACHABLE, "carrier")
            case CallEvent.DIALED, _:
                self._pending = (at + RING_AFTER_S, CallEvent.RANG, "")
            case CallEvent.RANG, "busy":
                self._pending = (at + plan.answer_after_s, CallEvent.REPORTED_BUSY, "callee")
            case CallEvent.RANG, ("human" | "voicemail") if plan.answer_after_s < plan.timeout_s:
                self._pending = (at + plan.answer_after_s, CallEvent.ANSWERED, "")
            case CallEvent.RANG, _:
                self._pending = (at + plan.timeout_s, CallEvent.NOT_ANSWERED, "timeout")

    def _hangup_deadline(self) -> tuple[float, str]:
        assert self.answered_at is not None
        plan = self.plan
        candidates = [
            (self.answered_at + self._time_limit_s, "time-limit"),
            (self.answered_at + plan.max_call_s, "caller"),
        ]
        if plan.hangup_after_s is not None:
            candidates.append((self.answered_at + plan.hangup_after_s, "caller"))
        return min(candidates)
