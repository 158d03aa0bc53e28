"""The live-calls run's figures: per-call timings aggregated, CPU over the window.

Pure functions over the emulators' records (``bench.call_metrics``) and the CPU
samples (``bench.procfs``); ``bench.live_run`` gathers both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from bench.call_metrics import (
    CallTimings,
    call_timings,
    longest_gap_ms,
    model_log,
    phone_log,
    underruns_ms,
)
from bench.procfs import CALL_ACTOR, Sampler, Usage
from sim.realtime.records import SessionRecord
from sim.twilio.recording import CallRecord

__all__ = ["FIRST_NUMBER", "INSTRUCTION", "analyse", "number", "stats"]

INSTRUCTION = "You are Ava, booking a dental cleaning for Jane Doe. (bench call {})"
TAG = re.compile(r"\(bench call (\d+)\)")
FIRST_NUMBER = 2000

Stats = dict[str, float]


def number(index: int) -> str:
    """Call ``index``'s destination; ``INSTRUCTION.format(index)`` names it to the model."""
    return f"+1555123{FIRST_NUMBER + index:04d}"


def stats(values: Sequence[float]) -> Stats:
    if not values:
        return {"count": 0}
    data = np.asarray(values, dtype=float)
    p50, p99 = np.percentile(data, [50, 99])
    return {"count": len(data), "p50": float(p50), "p99": float(p99), "max": float(data.max())}


def pair_records(
    calls: Sequence[CallRecord], sessions: Sequence[SessionRecord]
) -> list[tuple[CallRecord, SessionRecord]]:
    """Each Twilio call with its Realtime session: the call's number and the session's
    instructions carry the same index."""
    by_index: dict[int, SessionRecord] = {}
    for session in sessions:
        for event in session.client_events("session.update"):
            found = TAG.search(str(event.get("session", {}).get("instructions", "")))
            if found:
                by_index[int(found.group(1))] = session
                break
    pairs = []
    for call in calls:
        paired = by_index.get(int(call.to[-4:]) - FIRST_NUMBER)
        if paired is not None:
            pairs.append((call, paired))
    return pairs


def summarise(timings: Sequence[CallTimings]) -> dict[str, object]:
    replies = [r for t in timings for r in t.replies]
    silences = [s for r in replies for s in underruns_ms(r.arrivals)]
    setups = [
        (t.setup_ms, t.model_first_audio_ms or 0.0) for t in timings if t.setup_ms is not None
    ]
    return {
        "no_greeting": sum(t.setup_ms is None for t in timings),  # never heard a frame
        "setup_ms": stats([total for total, _ in setups]),
        "setup_system_ms": stats([total - model for total, model in setups]),
        "model_first_audio_ms": stats([model for _, model in setups]),
        "connect_ms": stats([t.connect_ms for t in timings if t.connect_ms is not None]),
        "start_to_create_ms": stats(
            [t.start_to_create_ms for t in timings if t.start_to_create_ms is not None]
        ),
        "caller_to_model_ms": stats([v for t in timings for v in t.caller_to_model_ms]),
        "caller_unmatched": sum(t.caller_unmatched for t in timings),
        "model_to_caller_ms": stats([v for t in timings for v in t.model_to_caller_ms]),
        "replies": len(replies),
        "replies_lost": sum(t.replies_lost for t in timings),
        "max_gap_ms": max((longest_gap_ms([a[0] for a in r.arrivals]) for r in replies), default=0),
        "max_sent_gap_ms": max((longest_gap_ms(r.sent) for r in replies), default=0.0),
        "underruns": len(silences),
        "max_underrun_ms": max(silences, default=0.0),
        "barge_in_ms": stats([v for t in timings for v in t.barge_in_ms]),
    }


def cpu_summary(usage: Usage | None, pids: Sequence[int], call_seconds: float) -> dict[str, object]:
    if usage is None or call_seconds <= 0:
        return {}
    actors = sum(usage.pids.get(pid, 0.0) for pid in pids)
    edge = usage.threads.get("edge", 0.0)
    return {
        "window_s": usage.seconds,
        "live_calls": call_seconds / usage.seconds,
        "per_call_cores": (actors + edge) * usage.seconds / call_seconds,
        "call_actors_cores": actors,
        "edge_cores": edge,
        "emulators_cores": usage.children.get("emulators", 0.0),  # their own processes
        "other_ray_cores": sum(usage.by_label.values()) - usage.by_label.get(CALL_ACTOR, 0.0),
        "bench_process_cores": usage.threads.get("total", 0.0),
        "machine_busy_cores": usage.machine_busy,
        "cpu_pressure": usage.cpu_pressure,
        "by_process": dict(sorted(usage.by_label.items(), key=lambda kv: -kv[1])),
    }


def busy_window(timings: Sequence[CallTimings]) -> tuple[float, float] | None:
    """From when half the calls' streams were up to when half had ended: the busiest
    stretch, also when placing N calls took longer than a call lasts."""
    windows = [t.stream_window for t in timings if t.stream_window is not None]
    if not windows:
        return None
    half = (len(windows) - 1) // 2
    return sorted(w[0] for w in windows)[half], sorted(w[1] for w in windows)[half]


def call_seconds(timings: Sequence[CallTimings], t0: float, t1: float) -> float:
    """Seconds of live calls (streams up) between ``t0`` and ``t1``, summed over calls."""
    windows = [t.stream_window for t in timings if t.stream_window is not None]
    return sum(max(0.0, min(w[1], t1) - max(w[0], t0)) for w in windows)


def analyse(
    calls: Sequence[CallRecord],
    sessions: Sequence[SessionRecord],
    sampler: Sampler,
    pids: Sequence[int],
) -> dict[str, object]:
    """Every figure of a run, from the emulators' records and the CPU samples."""
    timings = []
    for call, session in pair_records(calls, sessions):
        phone = phone_log(call)
        if phone is not None:
            timings.append(call_timings(phone, model_log(session)))
    window = busy_window(timings)
    usage = None if window is None else sampler.usage(*window, only=pids)
    live = 0.0
    if usage is not None:
        live = call_seconds(timings, usage.start, usage.start + usage.seconds)
    return {
        "measured_calls": len(timings),
        **summarise(timings),
        "cpu": cpu_summary(usage, pids, live),
    }
