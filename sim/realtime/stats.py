"""CPU time and pacing figures of an emulator process (``emu.stats()``)."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["EmulatorStats", "StatsCollector"]

MAX_SAMPLES = 200_000


@dataclass(frozen=True, slots=True)
class EmulatorStats:
    """``cpu_process_s`` is the whole process (the clients too, when run
    in-process); ``cpu_sessions_s`` only the session cores (thread CPU time
    around each call); ``validation_s`` the time spent validating server
    frames (``validate=True``), on top of ``cpu_sessions_s``. Lateness is how
    long after its scheduled time each audio delta was generated.
    """

    sessions_total: int
    sessions_open: int
    frames_in: int
    frames_out: int
    cpu_process_s: float
    cpu_sessions_s: float
    validation_s: float
    deltas: int
    lateness_ms_mean: float
    lateness_ms_p50: float
    lateness_ms_p99: float
    lateness_ms_max: float


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StatsCollector:
    def __init__(self) -> None:
        self.frames_in = 0
        self.frames_out = 0
        self.cpu_sessions_s = 0.0
        self.validation_s = 0.0
        self.deltas = 0
        self._lateness: list[float] = []
        self._cpu0 = _process_cpu()

    @contextlib.contextmanager
    def cpu(self) -> Iterator[None]:
        start = time.thread_time()
        try:
            yield
        finally:
            self.cpu_sessions_s += time.thread_time() - start

    @contextlib.contextmanager
    def validating(self) -> Iterator[None]:
        start = time.thread_time()
        try:
            yield
        finally:
            self.validation_s += time.thread_time() - start

    def delta(self, lateness_s: float) -> None:
        self.deltas += 1
        if len(self._lateness) < MAX_SAMPLES:
            self._lateness.append(max(lateness_s, 0.0) * 1000)

    def snapshot(self, total: int, open_: int) -> EmulatorStats:
        late = sorted(self._lateness)

        def pct(p: float) -> float:
            return late[min(len(late) - 1, int(p * len(late)))] if late else 0.0

        return EmulatorStats(
            sessions_total=total,
            sessions_open=open_,
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            cpu_process_s=_process_cpu() - self._cpu0,
            cpu_sessions_s=self.cpu_sessions_s,
            validation_s=self.validation_s,
            deltas=self.deltas,
            lateness_ms_mean=sum(late) / len(late) if late else 0.0,
            lateness_ms_p50=pct(0.5),
            lateness_ms_p99=pct(0.99),
            lateness_ms_max=late[-1] if late else 0.0,
        )
