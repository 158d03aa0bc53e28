"""The recorder's write path under many calls at once: CPU per report, commits per report.

K simulated calls send a :class:`~actors.recorder.CallRecorder` the reports a live call
sends (one call actor's 500 ms of actions each: a caller turn, the reply it started
and its transcript deltas, usage, phase changes and latency marks), straight to
the recorder in this process (no Ray: the Ray call is the same for any store). Each
call sends its next report when the last one is recorded, as fast as the store takes
them, so the figures are the recorder's capacity, not a schedule's. The store is SQLite
(WAL) in a temporary directory, as in a local cluster.

Reported per K: reports per second, milliseconds of this process's CPU per report
(every thread, the store's included) and database commits per report.

Shards (``run_sharded_load``): the same K calls split over S recorders in S processes
of their own (``spawn``), each taking the calls ``shard_of`` gives it, on SQLite or on a
throwaway PostgreSQL server (fsync on). Reported: reports per second over all of them
(first report sent to last one recorded), the recorders' CPU per report, and the
PostgreSQL server's (the postmaster and its backends) per report.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from sqlalchemy import event

from actors.ray_wiring import shard_of
from actors.recorder import CallRecorder
from bench.procfs import tree_cpu_s
from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    FinishCall,
    LatencyMeasured,
    PhaseChanged,
    UsageReported,
)
from switchboard.realtime_events import Usage
from switchboard.store import CallStore, NewCall
from switchboard.store.testing import throwaway_postgres

__all__ = ["CALLS", "RecorderLoad", "ShardedLoad", "run_recorder_load", "run_sharded_load"]

CALLS = (1, 10, 50)
REPORTS = 1600  # per K, over all its calls: enough to make the figures steady
ROUNDS = 3  # per K; the median round is reported
SHARDED_CALLS = 50
SHARDS = (1, 2)
BACKENDS = ("sqlite", "postgresql")
WORDS = ("Your ", "cleaning ", "is ", "booked ", "for ", "Tuesday ", "at ", "four. ")


@dataclass(frozen=True, slots=True)
class RecorderLoad:
    calls: int
    reports: int
    reports_per_s: float
    cpu_ms_per_report: float
    commits_per_report: float


def turn_reports(turn: int) -> list[list[Action]]:
    """The four reports of one conversation turn, as a call actor batches them."""
    caller, agent = f"item_c{turn}", f"item_a{turn}"
    usage = Usage(total_tokens=120, input_tokens=80, output_tokens=40)
    return [
        [CallerTurnStarted(caller), PhaseChanged("idle", "listening")],
        [
            CallerTurnTranscribed(caller, "Any weekday after three works."),
            PhaseChanged("listening", "thinking"),
            AgentTurnStarted(agent),
            LatencyMeasured("first_audio", 310.0),
            *(AgentTranscriptGrew(agent, word) for word in WORDS[:4]),
        ],
        [
            PhaseChanged("thinking", "speaking"),
            *(AgentTranscriptGrew(agent, word) for word in WORDS[4:]),
        ],
        [
            AgentTurnFinished(agent, "".join(WORDS)),
            UsageReported(f"resp_{turn}", usage),
            PhaseChanged("speaking", "idle"),
        ],
    ]


async def _one_call(recorder: CallRecorder, call_id: str, turns: int) -> int:
    """A call actor's reports, numbered as it numbers them."""
    reports = [actions for turn in range(turns) for actions in turn_reports(turn)]
    reports.append([FinishCall("completed")])
    delivered = 0
    for actions in reports:
        batch = [(action, time.time()) for action in actions]
        await recorder.report(call_id, batch, delivered, "bench-actor")
        delivered += len(batch)
    return len(reports)


async def _load(calls: int, directory: Path) -> RecorderLoad:
    recorder = CallRecorder(f"sqlite:///{directory / 'calls.db'}")
    await recorder.open()
    store = recorder.store
    assert store is not None
    ids = [
        (await store.create_call(NewCall("outbound", f"+1555{n:07d}", "+15550000000"))).id
        for n in range(calls)
    ]
    commits = 0

    def counted(_connection: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(store.engine, "commit", counted)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    turns = max(1, REPORTS // 4 // calls)
    sent = sum(await asyncio.gather(*(_one_call(recorder, call_id, turns) for call_id in ids)))
    await store.flush()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    event.remove(store.engine, "commit", counted)
    await recorder.close()
    return RecorderLoad(calls, sent, sent / wall, cpu * 1000 / sent, commits / sent)


@dataclass(frozen=True, slots=True)
class ShardedLoad:
    backend: str
    shards: int
    calls: int
    reports: int
    reports_per_s: float
    recorder_cpu_ms_per_report: float  # all the recorders' processes
    server_cpu_ms_per_report: float | None  # PostgreSQL's processes; None for SQLite


def _shard_process(
    url: str, call_ids: list[str], turns: int, start: Barrier, results: Queue[tuple[float, ...]]
) -> None:
    """One recorder shard in a process of its own: its calls' reports, then its figures."""

    async def main() -> tuple[float, ...]:
        recorder = CallRecorder(url)
        await recorder.open()
        assert recorder.store is not None
        start.wait()  # every shard open: the clocks start together
        cpu0, began = time.process_time(), time.monotonic()
        sent = sum(await asyncio.gather(*(_one_call(recorder, c, turns) for c in call_ids)))
        await recorder.store.flush()
        cpu, ended = time.process_time() - cpu0, time.monotonic()
        await recorder.close()
        return float(sent), cpu, began, ended

    results.put(asyncio.run(main()))


async def _create_calls(url: str, count: int) -> list[str]:
    store = await CallStore.open(url)
    try:
        new = [NewCall("outbound", f"+1555{n:07d}", "+15550000000") for n in range(count)]
        return [(await store.create_call(call)).id for call in new]
    finally:
        await store.close()


def _sharded_round(url: str, shards: int, calls: int, server_pid: int | None) -> ShardedLoad:
    ids = asyncio.run(_create_calls(url, calls))
    turns = max(1, REPORTS // 4 // calls)
    spawn = multiprocessing.get_context("spawn")
    start, results = spawn.Barrier(shards + 1), spawn.Queue()
    workers = [
        spawn.Process(
            target=_shard_process,
            args=(url, [c for c in ids if shard_of(c, shards) == s], turns, start, results),
        )
        for s in range(shards)
    ]
    for worker in workers:
        worker.start()
    try:
        start.wait(timeout=120)
        server0 = tree_cpu_s(server_pid) if server_pid else 0.0
        figures = [results.get(timeout=600) for _ in workers]
        server = tree_cpu_s(server_pid) - server0 if server_pid else None
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    sent = sum(f[0] for f in figures)
    wall = max(f[3] for f in figures) - min(f[2] for f in figures)
    backend = "postgresql" if server_pid else "sqlite"
    return ShardedLoad(
        backend,
        shards,
        calls,
        int(sent),
        sent / wall,
        sum(f[1] for f in figures) * 1000 / sent,
        None if server is None else server * 1000 / sent,
    )


@contextlib.contextmanager
def _databases(backend: str) -> Iterator[tuple[Iterator[str], int | None]]:
    """Fresh database URLs of ``backend``, and the server's pid (PostgreSQL)."""
    if backend == "postgresql":
        with throwaway_postgres(durable=True) as server:
            yield (server.url(server.create_database()) for _ in iter(int, 1)), server.pid
        return
    with tempfile.TemporaryDirectory(prefix="switchboard-shards-") as directory:
        yield (f"sqlite:///{directory}/calls-{n}.db" for n in range(1_000_000)), None


def run_sharded_load(
    backends: tuple[str, ...] = BACKENDS, shards: tuple[int, ...] = SHARDS
) -> list[ShardedLoad]:
    rows = []
    for backend in backends:
        with _databases(backend) as (urls, server_pid):
            for count in shards:
                rounds = [
                    _sharded_round(next(urls), count, SHARDED_CALLS, server_pid)
                    for _ in range(ROUNDS)
                ]
                middle = statistics.median_low(r.reports_per_s for r in rounds)
                rows.append(next(r for r in rounds if r.reports_per_s == middle))
    return rows


def run_recorder_load(calls: tuple[int, ...] = CALLS) -> list[RecorderLoad]:
    rows = []
    for count in calls:
        rounds = []
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory(prefix="switchboard-recorder-") as directory:
                rounds.append(asyncio.run(_load(count, Path(directory))))
        rows.append(sorted(rounds, key=lambda row: row.cpu_ms_per_report)[ROUNDS // 2])
    return rows


if __name__ == "__main__":
    for row in run_recorder_load():
        print(row)
    for sharded in run_sharded_load():
        print(sharded)
