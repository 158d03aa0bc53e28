"""The phone's playout buffer for what the server sends (protocols.md 1.3, 1.4).

Theory of operation
-------------------
Media from the server is buffered FIFO and played at 8 bytes per ms of
``now`` (milliseconds on any clock). Playback runs continuously while audio
is buffered: a *run* starts when audio arrives at an empty buffer and ends
when the buffer drains (an underrun) or is cleared. Within a run the played
position is ``run_start + bytes_played / 8``, so no rounding accumulates.

Marks sit in the FIFO between audio. A mark is echoed, as played, when the
audio before it has played; at once when nothing is buffered; and, as *not*
played, when ``clear`` flushes it (all pending marks, in order). Every call
returns the events it caused, oldest first; the caller calls ``advance(now)``
periodically (each 20 ms frame) to let time pass.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = [
    "BYTES_PER_MS",
    "AudioPlayed",
    "Cleared",
    "MarkEchoed",
    "Playout",
    "PlayoutEvent",
    "RunEnded",
    "RunStarted",
]

BYTES_PER_MS = 8


@dataclass(frozen=True, slots=True)
class RunStarted:
    at_ms: float


@dataclass(frozen=True, slots=True)
class AudioPlayed:
    start_ms: float
    data: bytes


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    name: str
    at_ms: float
    played: bool  # False when a clear flushed it: its audio did not play


@dataclass(frozen=True, slots=True)
class RunEnded:
    at_ms: float
    reason: str  # drained | cleared | closed


@dataclass(frozen=True, slots=True)
class Cleared:
    at_ms: float
    dropped_bytes: int
    marks: tuple[str, ...]


PlayoutEvent = RunStarted | AudioPlayed | MarkEchoed | RunEnded | Cleared


@dataclass(frozen=True, slots=True)
class _Mark:
    name: str


class Playout:
    def __init__(self) -> None:
        self._queue: deque[bytes | _Mark] = deque()
        self._head = 0  # bytes of queue[0] already played
        self._buffered = 0
        self._run_start: float | None = None
        self._run_bytes = 0

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    @property
    def playing(self) -> bool:
        return self._run_start is not None

    def push_audio(self, data: bytes, now: float) -> list[PlayoutEvent]:
        events = self.advance(now)
        if data:
            if self._run_start is None:
                self._run_start, self._run_bytes = now, 0
                events.append(RunStarted(now))
            self._queue.append(bytes(data))
            self._buffered += len(data)
        return events

    def push_mark(self, name: str, now: float) -> list[PlayoutEvent]:
        events = self.advance(now)
        if self._buffered == 0:
            events.append(MarkEchoed(name, now, played=True))
        else:
            self._queue.append(_Mark(name))
        return events

    def clear(self, now: float) -> list[PlayoutEvent]:
        events = self.advance(now)
        marks = tuple(item.name for item in self._queue if isinstance(item, _Mark))
        dropped = self._buffered
        self._reset()
        if self._run_start is not None:
            self._run_start = None
            events.append(RunEnded(now, "cleared"))
        events.extend(MarkEchoed(name, now, played=False) for name in marks)
        events.append(Cleared(now, dropped, marks))
        return events

    def close(self, now: float) -> list[PlayoutEvent]:
        """The call ended: whatever is still buffered is never heard; no marks echo."""
        events = self.advance(now)
        self._reset()
        if self._run_start is not None:
            self._run_start = None
            events.append(RunEnded(now, "closed"))
        return events

    def advance(self, now: float) -> list[PlayoutEvent]:
        if self._run_start is None:
            return []
        events: list[PlayoutEvent] = []
        due = int((now - self._run_start) * BYTES_PER_MS) - self._run_bytes
        queue = self._queue
        while queue:
            item = queue[0]
            if isinstance(item, _Mark):
                queue.popleft()
                events.append(MarkEchoed(item.name, self._position(), played=True))
                continue
            if due <= 0:
                break
            take = min(len(item) - self._head, due)
            events.append(AudioPlayed(self._position(), item[self._head : self._head + take]))
            self._head += take
            self._run_bytes += take
            self._buffered -= take
            due -= take
            if self._head == len(item):
                queue.popleft()
                self._head = 0
        if self._buffered == 0:
            events.append(RunEnded(self._position(), "drained"))
            self._run_start = None
        return events

    def _position(self) -> float:
        assert self._run_start is not None
        return self._run_start + self._run_bytes / BYTES_PER_MS

    def _reset(self) -> None:
        self._queue.clear()
        self._head = 0
        self._buffered = 0
