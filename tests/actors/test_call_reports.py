"""A call actor's reports while the recorder fails: kept, sent again as they were,
compacted, in bounded reports, bounded in all, and tried with a back-off."""

from __future__ import annotations

import logging
import time
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors import call_actor
from actors.call_actor import (
    LIVE_ONLY,
    MAX_BACKLOG,
    REPORT_CHUNK,
    REPORT_INTERVAL_S,
    REPORT_RETRY_MAX_S,
    CallActor,
    CallPlan,
)
from actors.recorder import CallRecorder
from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    CallStatusChanged,
    FinishCall,
    HangUp,
    LatencyMeasured,
    LevelsMeasured,
    Notice,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    ToolReturned,
    UsageReported,
)
from switchboard.realtime_events import Usage
from switchboard.settings import Settings
from switchboard.store import NewCall
from switchboard.store.recorder import _write_apart

Batch = list[tuple[Action, float]]


@dataclass
class FlakyRecorder:
    """Refuses ``refusals`` reports; ``taken`` holds each report it took, with its seq.
    ``inner`` (a real recorder) records a report before a refusal, as one whose answer
    was lost does."""

    refusals: int = 0
    inner: CallRecorder | None = None
    tried: list[tuple[Batch, int | None]] = field(default_factory=list)
    taken: list[tuple[Batch, int | None]] = field(default_factory=list)

    async def report(
        self, call_id: str, batch: Batch, seq: int | None = None, sender: str = ""
    ) -> None:
        self.tried.append((list(batch), seq))
        if self.inner is not None:
            await self.inner.report(call_id, batch, seq, sender)
        if self.refusals:
            self.refusals -= 1
            raise ConnectionError("StoreError: could not connect to server")
        self.taken.append((list(batch), seq))


async def _nothing(_: str) -> None:
    return None


def make_actor(recorder: FlakyRecorder, call_id: str = "call-1") -> CallActor:
    settings = Settings(_env_file=None, twilio_auth_token="t", openai_api_key="k")  # type: ignore[call-arg]
    actor = CallActor("slot", settings, recorder, _nothing)
    actor.plan = CallPlan(call_id, "Hi", stream_token="t")
    return actor


def speak(actor: CallActor, item: str, offset: int, words: int) -> int:
    """The agent says ``words`` words, metered as it goes; the offset after them."""
    for _ in range(words):
        actor.record(LevelsMeasured(-20.0, -30.0), time.monotonic())
        actor.record(AgentTranscriptGrew(item, " word", offset), time.monotonic())
        offset += 5
    return offset


def types(batch: Batch) -> list[type]:
    return [type(action) for action, _ in batch]


async def test_a_failed_report_goes_again_as_it_was_and_what_came_after_is_compacted() -> None:
    recorder = FlakyRecorder(refusals=1)
    actor = make_actor(recorder)
    offset = speak(actor, "item_1", 0, 3)
    await actor._send_reports()  # refused
    first, seq = recorder.tried[0]
    offset = speak(actor, "item_1", offset, 40)  # while the recorder is away
    actor.record(PhaseChanged("speaking", "idle"), time.monotonic())
    await actor._send_reports()
    # Exactly as it went the first time, under the same number: the recorder may have
    # recorded it, and skips by count.
    assert recorder.taken[0] == (first, seq) and seq == 0
    later, later_seq = recorder.taken[1]
    assert later_seq == len(first)
    # Behind it: no stale levels, the 40 deltas merged into one, at the same place.
    assert types(later) == [AgentTranscriptGrew, PhaseChanged]
    assert later[0][0] == AgentTranscriptGrew("item_1", " word" * 40, 15)
    assert actor._pending == []


async def test_a_report_recorded_whose_answer_was_lost_is_recorded_once(tmp_path: Path) -> None:
    inner = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    await inner.open()
    assert inner.store is not None
    call = await inner.store.create_call(
        NewCall(direction="outbound", to="+15551234567", from_="+15005550006")
    )
    recorder = FlakyRecorder(refusals=2, inner=inner)  # recorded, then "failed", twice
    actor = make_actor(recorder, call.id)
    actor.record(AgentTurnStarted("item_1"), time.monotonic())
    actor.record(PhaseChanged("thinking", "speaking"), time.monotonic())
    offset = speak(actor, "item_1", 0, 2)
    await actor._send_reports()  # recorded; its answer lost
    offset = speak(actor, "item_1", offset, 5)
    await actor._send_reports()  # recorded again (skipped); its answer lost again
    actor.record(PhaseChanged("speaking", "idle"), time.monotonic())
    speak(actor, "item_1", offset, 2)
    actor.record(AgentTurnFinished("item_1", " word" * 9), time.monotonic())
    actor.record(FinishCall("stream_stopped"), time.monotonic())
    await actor._send_reports()
    assert actor._pending == []
    detail = await inner.store.get_call(call.id)
    assert detail is not None
    assert [(e.kind, e.data.get("new")) for e in detail.timeline] == [
        ("phase", "speaking"),
        ("phase", "idle"),
        ("finished", None),
    ]
    assert [turn.text for turn in detail.transcript] == [" word" * 9]
    await inner.close()


async def test_a_backlog_goes_in_bounded_consecutive_reports() -> None:
    recorder = FlakyRecorder(refusals=1)
    actor = make_actor(recorder)
    actor.record(PhaseChanged("idle", "thinking"), time.monotonic())
    await actor._send_reports()  # refused: the outage begins
    for n in range(2 * REPORT_CHUNK + 10):
        actor.record(LatencyMeasured("response", float(n)), time.monotonic())
    await actor._send_reports()
    sizes = [len(batch) for batch, _ in recorder.taken]
    assert sizes == [1, REPORT_CHUNK, REPORT_CHUNK, 10]
    assert [seq for _, seq in recorder.taken] == [0, 1, 1 + REPORT_CHUNK, 1 + 2 * REPORT_CHUNK]


async def test_one_flush_sends_what_was_pending_not_what_comes_meanwhile() -> None:
    recorder = FlakyRecorder()
    actor = make_actor(recorder)
    actor.record(PhaseChanged("idle", "thinking"), time.monotonic())
    report = recorder.report

    async def busy_call(
        call_id: str, batch: Batch, seq: int | None = None, sender: str = ""
    ) -> None:
        actor.record(PhaseChanged("thinking", "speaking"), time.monotonic())  # meanwhile
        await report(call_id, batch, seq, sender)

    recorder.report = busy_call  # type: ignore[method-assign]
    await actor._send_reports()
    assert len(recorder.taken) == 1 and len(actor._pending) == 1  # for the next flush


async def test_the_backlog_is_bounded_and_says_so_once_but_keeps_the_calls_end() -> None:
    recorder = FlakyRecorder(refusals=1)
    actor = make_actor(recorder)
    actor.record(PhaseChanged("idle", "thinking"), time.monotonic())
    await actor._send_reports()  # refused
    for n in range(MAX_BACKLOG + 100):
        actor.record(LatencyMeasured("response", float(n)), time.monotonic())
    actor.record(HangUp("max_duration"), time.monotonic())
    actor.record(FinishCall("max_duration"), time.monotonic())
    assert len(actor._pending) == MAX_BACKLOG + 3
    problems = [a for a, _ in actor._pending if isinstance(a, ProblemNoted)]
    assert [(p.source, p.reason) for p in problems] == [("recorder", "backlog_full")]
    assert types(actor._pending[-2:]) == [HangUp, FinishCall]
    await actor._send_reports()
    assert actor._pending == []
    assert sum(len(batch) for batch, _ in recorder.taken) == MAX_BACKLOG + 3


async def test_failed_reports_back_off_and_are_logged_once_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = FlakyRecorder(refusals=5)
    actor = make_actor(recorder)
    waits = []
    with caplog.at_level(logging.INFO, logger=call_actor.__name__):
        for _ in range(5):
            actor.record(PhaseChanged("idle", "thinking"), time.monotonic())
            await actor._send_reports()
            waits.append(actor._retry_wait)
        await actor._send_reports()
    assert waits == [1.0, 2.0, 4.0, REPORT_RETRY_MAX_S, REPORT_RETRY_MAX_S]
    assert actor._retry_wait == REPORT_INTERVAL_S  # taken: back to the batching period
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # its start and its end, not one per try
    assert "ConnectionError" in messages[0] and "again after" in messages[1]
    assert all(r.exc_info is None for r in caplog.records)


async def test_the_actions_left_out_of_a_backlog_are_those_the_store_keeps_nothing_of() -> None:
    usage = Usage(total_tokens=3, input_tokens=1, output_tokens=2)
    samples: list[Action] = [
        PhaseChanged("idle", "thinking"),
        CallerTurnStarted("item_1"),
        CallerTurnTranscribed("item_1", "Hi"),
        ToolReturned("call_1", "{}"),
        AgentTurnStarted("item_2"),
        AgentTranscriptGrew("item_2", "Hi", 0),
        AgentTurnFinished("item_2", "Hi"),
        AgentTurnInterrupted("item_2", 10, 20),
        LatencyMeasured("answer", 1.0),
        UsageReported("resp_1", usage),
        ProblemNoted("policy", "x", "y"),
        CallStatusChanged("completed"),
        LevelsMeasured(-20.0, -30.0),
        RunTool("call_1", "lookup", "{}"),
        HangUp("api"),
        RenewSession("session_cap"),
        FinishCall("api"),
    ]
    # What a call reports: every notice, and the commands only the shell carries out.
    reported = set(typing.get_args(Notice)) | {RunTool, HangUp, RenewSession, FinishCall}
    assert {type(s) for s in samples} == reported

    class Store:
        def __init__(self) -> None:
            self.writes = 0

        def __getattr__(self, name: str) -> typing.Any:
            async def write(*args: object) -> None:
                self.writes += 1

            return write

    async def kept(action: Action) -> bool:
        store = Store()
        entry = await _write_apart(store, "c", action, datetime.now(UTC))  # type: ignore[arg-type]
        return entry is not None or store.writes > 0

    assert {type(a) for a in samples if not await kept(a)} == LIVE_ONLY
