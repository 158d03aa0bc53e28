"""Call status rules, as a pure fold over status callbacks.

Twilio status callbacks arrive out of order (protocols.md §2.5 and §6, pitfall 16),
so a call's status only ever moves *forward* along

    queued -> initiated -> ringing -> in-progress -> (terminal)

and the five terminal statuses (``completed``, ``busy``, ``no-answer``,
``failed``, ``canceled``) are final: a late ``ringing`` after ``completed``
is kept in the timeline but does not reopen the call, and a second, different
terminal status does not replace the first.

Times are derived from the callbacks, whatever their order: ``answered_at``
is the earliest ``in-progress`` seen, ``ended_at`` the time of the terminal
status that was applied. :func:`apply_status` says whether the callback moved
the status, so the store can mark ignored ones in the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from switchboard.errors import StoreInputError

__all__ = [
    "STATUSES",
    "TERMINAL_STATUSES",
    "StatusState",
    "apply_status",
    "is_terminal",
]

# Rank along the call's life; every terminal status shares the last rank.
_RANK = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "no-answer": 4,
    "failed": 4,
    "canceled": 4,
}
STATUSES = frozenset(_RANK)
TERMINAL_STATUSES = frozenset(s for s, rank in _RANK.items() if rank == 4)


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class StatusState:
    status: str
    answered_at: datetime | None = None
    ended_at: datetime | None = None


def apply_status(state: StatusState, status: str, at: datetime) -> tuple[StatusState, bool]:
    """Fold one status callback into ``state``; return the new state and whether it moved.

    Raises :class:`StoreInputError` for a status Twilio never sends.
    """
    if status not in _RANK:
        raise StoreInputError(f"unknown call status {status!r}; expected one of {sorted(_RANK)}")
    new = state
    if status == "in-progress" and (new.answered_at is None or at < new.answered_at):
        # Answer time is a fact even when its callback comes after the end.
        new = replace(new, answered_at=at)
    if is_terminal(state.status) or _RANK[status] <= _RANK[state.status]:
        return new, False
    if is_terminal(status):
        new = replace(new, ended_at=at)
    return replace(new, status=status), True
