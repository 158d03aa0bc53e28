"""What Twilio has played of the audio we sent (protocols.md 1.3, 6.1, 6.2).

Theory of operation
-------------------
Twilio plays everything we send from one FIFO buffer, in order, at 8 bytes/ms
(mu-law 8 kHz), and says nothing about it except by echoing our ``mark``
messages. The tracker mirrors that buffer on one byte axis, the *position*
(bytes sent since the stream began, across all items):

* ``audio_sent`` appends a segment: which item, its offsets in that item, its
  position, and when it was sent;
* ``mark_sent`` pins a mark name to the current position; marks form a FIFO;
* ``mark_echoed`` for a pinned mark moves the *played position* to its pin and,
  because Twilio plays in order, retires every earlier mark too (so an echo
  out of FIFO order is handled); each item's acknowledged offset follows from
  the segments the played position has passed;
* ``cleared`` drops the buffered segments and turns every outstanding mark
  into a *flushed* one: its echo proves nothing and moves nothing (6.2).

Between echoes ``played_bytes(item, now)`` interpolates: it replays the
pending segments at 8 bytes/ms starting from the last played echo, none
earlier than it was sent, and never past the next outstanding mark or the
bytes sent, so a truncation offset built on it never exceeds real audio (6.1).
Times are seconds on any monotonic clock, passed in by the caller.

Next: ``switchboard.twilio_stream.TwilioStream`` owns one tracker per stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from switchboard.twilio_events import PlaybackAcknowledged

__all__ = ["BYTES_PER_SECOND", "MarkEcho", "OutstandingMark", "PlaybackTracker"]

BYTES_PER_SECOND = 8000
# Float times make 8000 * (0.3 - 0.2) come out as 799.99...; nudge before flooring.
_EPSILON_BYTES = 1e-6


@dataclass(frozen=True, slots=True)
class OutstandingMark:
    """A mark sent and not yet echoed.

    ``item_id`` is None for a free-form mark; ``end_offset`` is the item's
    byte offset at the mark (0 for a free-form mark); ``position`` is the
    stream-wide byte position of the mark.
    """

    name: str
    item_id: str | None
    end_offset: int
    position: int
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """How an echoed mark was understood.

    ``known`` is false for a name that is not outstanding (never sent, or
    already retired by a later echo); ``flushed`` is true when a ``clear``
    sent it back; ``acknowledged`` has one entry per item whose acknowledged
    playback advanced, in play order.
    """

    known: bool
    flushed: bool
    acknowledged: tuple[PlaybackAcknowledged, ...] = ()


@dataclass(slots=True)
class _Segment:
    item_id: str
    item_start: int
    start: int
    end: int
    sent_at: float


@dataclass(slots=True)
class _Item:
    sent: int = 0
    acked: int = 0
    acked_at: float | None = None
    # Interpolated offset reached when a clear cut playback short.
    estimated: int = 0


@dataclass(slots=True)
class PlaybackTracker:
    """Pure model of Twilio's playout buffer for one stream."""

    _items: dict[str, _Item] = field(default_factory=dict)
    _segments: deque[_Segment] = field(default_factory=deque)
    _marks: deque[OutstandingMark] = field(default_factory=deque)
    _flushed: dict[str, int] = field(default_factory=dict)
    _sent: int = 0
    _played: int = 0
    _played_at: float | None = None
    # Position up to which every byte is either played or flushed.
    _settled: int = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes sent and not yet acknowledged as played or flushed."""
        return self._sent - self._settled

    @property
    def is_playing(self) -> bool:
        return self._sent > self._settled

    @property
    def outstanding_marks(self) -> tuple[OutstandingMark, ...]:
        return tuple(self._marks)

    def sent_bytes(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return 0 if item is None else item.sent

    def audio_sent(self, item_id: str, nbytes: int, now: float) -> int:
        """Record ``nbytes`` of ``item_id`` sent at ``now``; return the item's end offset."""
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _Item()
        start = self._sent
        item_start = item.sent
        self._sent += nbytes
        item.sent += nbytes
        last = self._segments[-1] if self._segments else None
        # Merging is exact when the new bytes arrive before the last segment
        # could possibly finish playing: they then start exactly where it ends.
        if (
            last is not None
            and last.item_id == item_id
            and now <= last.sent_at + (last.end - last.start) / BYTES_PER_SECOND
        ):
            last.end = self._sent
        else:
            self._segments.append(_Segment(item_id, item_start, start, self._sent, now))
        return item.sent

    def mark_sent(self, name: str, item_id: str | None = None, now: float | None = None) -> None:
        """Pin ``name`` at the current position (after everything sent so far)."""
        end_offset = 0 if item_id is None else self.sent_bytes(item_id)
        self._marks.append(OutstandingMark(name, item_id, end_offset, self._sent, now))

    def mark_echoed(self, name: str, now: float) -> MarkEcho:
        """Twilio echoed ``name`` at ``now``."""
        pending = self._flushed.get(name)
        if pending is not None:
            if pending == 1:
                del self._flushed[name]
            else:
                self._flushed[name] = pending - 1
            return MarkEcho(known=True, flushed=True)
        mark = next((m for m in self._marks if m.name == name), None)
        if mark is None:
            return MarkEcho(known=False, flushed=False)
        # Twilio plays in order: marks queued before this one have played too.
        while self._marks.popleft() is not mark:
            pass
        return MarkEcho(known=True, flushed=False, acknowledged=self._advance(mark.position, now))

    def cleared(self, now: float) -> None:
        """Twilio was told to drop its buffer at ``now``."""
        for item_id, offset in self._interpolate(now).items():
            item = self._items[item_id]
            item.estimated = max(item.estimated, offset)
        for mark in self._marks:
            self._flushed[mark.name] = self._flushed.get(mark.name, 0) + 1
        self._marks.clear()
        self._segments.clear()
        self._settled = self._sent

    def played_bytes(self, item_id: str, now: float | None = None) -> int:
        """Acknowledged playback of ``item_id``; interpolated to ``now`` if given."""
        item = self._items.get(item_id)
        if item is None:
            return 0
        if now is None:
            return item.acked
        reached = self._interpolate(now).get(item_id, 0)
        return max(item.acked, item.estimated, reached)

    def _advance(self, position: int, now: float) -> tuple[PlaybackAcknowledged, ...]:
        if position <= self._played:
            # A mark pinned where playback had already been acknowledged (sent
            # with nothing buffered): no news, and keep the older anchor time.
            return ()
        self._played = position
        self._played_at = now
        self._settled = max(self._settled, position)
        advanced: dict[str, _Item] = {}
        segments = self._segments
        while segments and segments[0].start < position:
            seg = segments[0]
            item = self._items[seg.item_id]
            if seg.end <= position:
                item.acked = seg.item_start + seg.end - seg.start
                segments.popleft()
            else:
                item.acked = seg.item_start + position - seg.start
                seg.item_start = item.acked
                seg.start = position
            item.acked_at = now
            advanced[seg.item_id] = item
        empty = self._sent == self._settled
        return tuple(PlaybackAcknowledged(i, item.acked, empty) for i, item in advanced.items())

    def _interpolate(self, now: float) -> dict[str, int]:
        """Replay pending segments up to ``now``: item id -> offset reached."""
        reached: dict[str, int] = {}
        cap = self._marks[0].position if self._marks else self._sent
        clock = self._played_at
        for seg in self._segments:
            begin = seg.sent_at if clock is None else max(clock, seg.sent_at)
            if now <= begin or seg.start >= cap:
                break
            size = min(seg.end, cap) - seg.start
            done = int((now - begin) * BYTES_PER_SECOND + _EPSILON_BYTES)
            if done < size:
                reached[seg.item_id] = seg.item_start + done
                break
            reached[seg.item_id] = seg.item_start + size
            if seg.end > cap:
                break
            clock = begin + (seg.end - seg.start) / BYTES_PER_SECOND
        return reached
