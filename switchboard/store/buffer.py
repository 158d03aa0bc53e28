"""The in-memory transcript of agent turns in progress, and when to write it.

Sans-I/O: the store feeds deltas and the time (``now``, monotonic seconds) and
asks what to write. Agent transcript deltas arrive ~10-20 per second per call;
writing each would cost a transaction apiece, so a turn's text is written at
most once per ``interval_s`` (the first delta after a quiet spell is due at
once), plus always when the turn finishes or is cut. The store schedules a
write at :meth:`TranscriptBuffer.deadline` for text still waiting, so a crash
loses at most the deltas of the last ``interval_s`` of the turn in progress.

Turns that were finished or cut are remembered (a bounded set), so the deltas
that still trickle in after a cut are recognised and dropped without a query.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["TranscriptBuffer", "TurnKey"]

TurnKey = tuple[str, str]  # (call_id, item_id)


@dataclass(slots=True)
class _Open:
    text: str
    written: str  # what the database holds
    written_at: float


class TranscriptBuffer:
    def __init__(self, interval_s: float, remember_closed: int = 4096) -> None:
        self.interval_s = interval_s
        self._open: dict[TurnKey, _Open] = {}
        self._closed: OrderedDict[TurnKey, None] = OrderedDict()
        self._remember = remember_closed

    def open(self, key: TurnKey, text: str, now: float) -> None:
        """Track a turn whose database row holds ``text``."""
        self._closed.pop(key, None)
        self._open[key] = _Open(text, text, now - self.interval_s)

    def is_open(self, key: TurnKey) -> bool:
        return key in self._open

    def was_closed(self, key: TurnKey) -> bool:
        return key in self._closed

    def grow(self, key: TurnKey, delta: str, now: float, offset: int | None = None) -> bool:
        """Put ``delta`` at ``offset`` of an open turn's text (at its end if None, or if
        text before it is missing); return whether a write is due now. A delta sent
        again lands where it did the first time: the text is not doubled."""
        turn = self._open[key]
        if offset is None or offset >= len(turn.text):
            turn.text += delta
        elif turn.text[offset : offset + len(delta)] != delta:
            turn.text = turn.text[:offset] + delta  # what followed it was not this call's
        return self.due(key, now)

    def due(self, key: TurnKey, now: float) -> bool:
        turn = self._open.get(key)
        return turn is not None and turn.text != turn.written and now >= self._next(turn)

    def deadline(self, key: TurnKey) -> float | None:
        """When the unwritten text of ``key`` must be written; ``None`` if nothing waits."""
        turn = self._open.get(key)
        if turn is None or turn.text == turn.written:
            return None
        return self._next(turn)

    def text(self, key: TurnKey) -> str | None:
        turn = self._open.get(key)
        return None if turn is None else turn.text

    def texts_of(self, call_id: str) -> dict[str, str]:
        """The current text of every open turn of ``call_id``, by item id."""
        return {item: turn.text for (call, item), turn in self._open.items() if call == call_id}

    def unwritten(self) -> list[TurnKey]:
        return [key for key, turn in self._open.items() if turn.text != turn.written]

    def written(self, key: TurnKey, text: str, now: float) -> None:
        """The database now holds ``text`` for ``key``."""
        turn = self._open.get(key)
        if turn is not None:
            turn.written, turn.written_at = text, now

    def close(self, key: TurnKey) -> str | None:
        """Stop tracking ``key`` (finished or cut); return its text, if it was open."""
        turn = self._open.pop(key, None)
        self._closed[key] = None
        self._closed.move_to_end(key)
        while len(self._closed) > self._remember:
            self._closed.popitem(last=False)
        return None if turn is None else turn.text

    def _next(self, turn: _Open) -> float:
        return turn.written_at + self.interval_s
