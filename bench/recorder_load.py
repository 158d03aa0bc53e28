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
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event

from actors.recorder import CallRecorder
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
from switchboard.store import NewCall

__all__ = ["CALLS", "RecorderLoad", "run_recorder_load"]

CALLS = (1, 10, 50)
REPORTS = 1600  # per K, over all its calls: enough to make the figures steady
ROUNDS = 3  # per K; the median round is reported
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
    sent = 0
    for turn in range(turns):
        for actions in turn_reports(turn):
            await recorder.report(call_id, [(action, time.time()) for action in actions])
            sent += 1
    await recorder.report(call_id, [(FinishCall("completed"), time.time())])
    return sent + 1


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
