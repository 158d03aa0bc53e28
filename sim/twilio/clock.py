"""One 20 ms ticker for every call's media, plus the emulator's own cost.

A hundred calls must not mean a hundred sleeping tasks drifting apart: one
task wakes on an absolute grid (``t0 + n * 20 ms``) and calls every
subscriber's ``on_tick(now)``; each phone works out from its own schedule
how many frames are due (more than one after a stall, so none is lost).

``EmulatorStats`` collects what a benchmark needs to tell the system's cost
from the emulator's: how late each frame left (send time minus its slot on
the absolute schedule), how late the ticker woke, and the CPU time spent in
the emulator's own synchronous sections (``measure()``; an approximation in
process, exact when the emulator runs alone as ``switchboard sim twilio``,
where ``process_cpu_s`` is all of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from typing import Protocol

import numpy as np

__all__ = ["FRAME_S", "EmulatorStats", "FrameClock", "Ticker"]

log = logging.getLogger(__name__)

FRAME_S = 0.020
# After a stall, the loop passes the readers get before the phones catch up: enough for
# bytes relayed in this process (a media edge) to reach a phone's reader (socket ->
# websocket frames -> the stream's reader task, each a pass), not a wait for more audio.
READ_PASSES_AFTER_STALL = 8
_SAMPLES = 200_000  # jitter samples kept (a ring): 100 calls x 40 s


class Ticker(Protocol):
    def on_tick(self, now: float) -> None: ...


class _Ring:
    def __init__(self, size: int = _SAMPLES) -> None:
        self._data = np.zeros(size, dtype=np.float32)
        self._n = 0

    def clear(self) -> None:
        self._n = 0

    def add(self, value: float) -> None:
        self._data[self._n % len(self._data)] = value
        self._n += 1

    def summary(self) -> dict[str, float]:
        values = self._data[: min(self._n, len(self._data))]
        if not len(values):
            return {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {
            "count": self._n,
            "p50": round(float(p50), 3),
            "p95": round(float(p95), 3),
            "p99": round(float(p99), 3),
            "max": round(float(values.max()), 3),
        }


class EmulatorStats:
    def __init__(self) -> None:
        self.frame_lateness_ms = _Ring()
        self.tick_lateness_ms = _Ring()
        self.reset()

    def reset(self) -> None:
        """Start a new measurement window (e.g. after a benchmark's warm-up)."""
        self.frame_lateness_ms.clear()
        self.tick_lateness_ms.clear()
        self.cpu_s = 0.0
        self.frames_sent = 0
        self._process_cpu0 = time.process_time()
        self._wall0 = time.monotonic()

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        start = time.thread_time()
        try:
            yield
        finally:
            self.cpu_s += time.thread_time() - start

    def frame_sent(self, lateness_s: float) -> None:
        self.frames_sent += 1
        self.frame_lateness_ms.add(lateness_s * 1000)

    def snapshot(self) -> dict[str, object]:
        return {
            "wall_s": round(time.monotonic() - self._wall0, 3),
            "emulator_cpu_s": round(self.cpu_s, 3),
            "process_cpu_s": round(time.process_time() - self._process_cpu0, 3),
            "frames_sent": self.frames_sent,
            "frame_lateness_ms": self.frame_lateness_ms.summary(),
            "tick_lateness_ms": self.tick_lateness_ms.summary(),
        }


class FrameClock:
    """Runs while anyone is subscribed; ``on_tick`` must not block."""

    def __init__(self, stats: EmulatorStats, period_s: float = FRAME_S) -> None:
        self.period_s = period_s
        self._stats = stats
        self._subscribers: dict[int, Ticker] = {}
        self._task: asyncio.Task[None] | None = None
        self._t0 = 0.0  # the grid's origin (loop time)

    def next_slot(self, now: float) -> float:
        """The first grid time after ``now``: where a new stream's frame 1 goes."""
        if self._task is None or self._task.done():
            return now + self.period_s  # the grid starts with this subscriber
        slot = max(1, math.floor((now - self._t0) / self.period_s) + 1)
        return self._t0 + slot * self.period_s

    def add(self, ticker: Ticker, now: float | None = None) -> None:
        """Subscribe; a stopped clock restarts with its grid at ``now``."""
        self._subscribers[id(ticker)] = ticker
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._t0 = loop.time() if now is None else now
            self._task = loop.create_task(self._run(self._t0), name="frame-clock")

    def remove(self, ticker: Ticker) -> None:
        self._subscribers.pop(id(ticker), None)

    async def close(self) -> None:
        self._subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while self._subscribers:
            n += 1
            target = t0 + n * self.period_s
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            self._stats.tick_lateness_ms.add((now - target) * 1000)
            if now - target > self.period_s:
                # Stalled: this process was not running (descheduled, a collection), but
                # the network went on delivering. Let the readers take what waits in the
                # socket buffers before the phones catch up, or they would play as silence
                # audio that reached a real phone in time. Then skip the missed slots
                # (phones catch up from their own schedules).
                for _ in range(READ_PASSES_AFTER_STALL):
                    await asyncio.sleep(0)  # one pass of the loop: its sockets, its tasks
                now = loop.time()
                n = int((now - t0) / self.period_s)
            with self._stats.measure():
                for ticker in list(self._subscribers.values()):
                    try:
                        ticker.on_tick(now)
                    except Exception:  # one broken phone must not stop every other's clock
                        log.exception("a phone failed on its clock tick; it gets no more")
                        self.remove(ticker)
