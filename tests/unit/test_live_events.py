from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    CallerTurnTranscribed,
    CallStatusChanged,
    FinishCall,
    ForwardCallerAudio,
    HangUp,
    LatencyMeasured,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    ToolReturned,
    UsageReported,
)
from switchboard.live_events import live_event
from switchboard.realtime_events import Usage


def test_notices_become_json_events_with_utc_times() -> None:
    event = live_event("c1", CallerTurnTranscribed("item_1", "Hello?"), 1_700_000_000.25)
    assert event == {
        "call_id": "c1",
        "type": "transcript.caller",
        "at": "2023-11-14T22:13:20.250000+00:00",
        "item_id": "item_1",
        "text": "Hello?",
    }
    cut = live_event("c1", AgentTurnInterrupted("item_2", 640, 3000), 0.0)
    assert cut is not None
    assert (cut["type"], cut["heard_ms"], cut["generated_ms"]) == (
        "transcript.agent_interrupted",
        640,
        3000,
    )
    usage = live_event("c1", UsageReported("resp_1", Usage(30, 10, 20)), 0.0)
    assert usage is not None
    assert (usage["type"], usage["usage"], usage["response_id"]) == (
        "usage",
        {**asdict(Usage(30, 10, 20))},
        "resp_1",
    )
    json.dumps([event, cut, usage])  # plain JSON all the way down
    grew = live_event("c1", AgentTranscriptGrew("item_2", "there", 6), 0.0)
    assert grew is not None and (grew["delta"], grew["offset"]) == ("there", 6)
    unplaced = live_event("c1", AgentTranscriptGrew("item_2", "there"), 0.0)
    assert unplaced is not None and "offset" not in unplaced


def test_tool_runs_and_endings_are_events_too() -> None:
    tool = live_event("c1", RunTool("call_1", "lookup", "{}"), 0.0)
    assert tool is not None
    assert (tool["type"], tool["name"]) == ("tool.called", "lookup")
    ended = live_event("c1", FinishCall("stream_stopped"), 0.0)
    assert ended is not None
    assert (ended["type"], ended["reason"]) == ("call.ended", "stream_stopped")
    hangup = live_event("c1", HangUp("api"), 0.0)
    assert hangup is not None
    assert hangup["type"] == "call.hanging_up"
    renewed = live_event("c1", RenewSession("session_expired"), 0.0)
    assert renewed is not None
    assert (renewed["type"], renewed["reason"]) == (
        "session.renewed",
        "session_expired",
    )


def test_audio_and_protocol_commands_are_not_events() -> None:
    assert live_event("c1", ForwardCallerAudio("AAAA"), 0.0) is None


def test_every_notice_has_an_event_type() -> None:
    from switchboard.call_actions import (
        AgentTranscriptGrew,
        AgentTurnFinished,
        AgentTurnStarted,
        CallerTurnStarted,
        LatencyMeasured,
        PhaseChanged,
        ProblemNoted,
        ToolReturned,
    )

    notices = [
        PhaseChanged("idle", "thinking"),
        CallerTurnStarted("u1"),
        AgentTurnStarted("a1"),
        AgentTranscriptGrew("a1", "He"),
        AgentTurnFinished("a1", "Hello"),
        ToolReturned("call_1", "{}"),
        LatencyMeasured("response", 412.5),
        ProblemNoted("twilio", "invalid_json", "bad frame"),
    ]
    types = [live_event("c1", n, 0.0)["type"] for n in notices]  # type: ignore[index]
    assert types == [
        "call.phase",
        "transcript.caller_started",
        "transcript.agent_started",
        "transcript.agent_delta",
        "transcript.agent_done",
        "tool.returned",
        "latency",
        "problem",
    ]


def test_a_status_the_application_sets_is_a_status_event() -> None:
    event = live_event("c1", CallStatusChanged("in-progress"), 0.0)
    assert event is not None
    assert (event["type"], event["status"]) == ("call.status", "in-progress")


# The whole body of each event, as the console and ``switchboard call`` read it.
BODIES: dict[str, tuple[Action, dict[str, object]]] = {
    "phase": (PhaseChanged("idle", "thinking"), {"old": "idle", "new": "thinking"}),
    "agent_done": (AgentTurnFinished("a1", "Hello"), {"item_id": "a1", "text": "Hello"}),
    "interrupted_by_end": (
        AgentTurnInterrupted("a1", 640, 3000, by="end"),
        {"item_id": "a1", "heard_ms": 640, "generated_ms": 3000, "by": "end"},
    ),
    "tool_returned": (
        ToolReturned("call_1", '{"ok": true}'),
        {"tool_call_id": "call_1", "output": '{"ok": true}'},
    ),
    "tool_called": (
        RunTool("call_1", "lookup", '{"id": 7}'),
        {"tool_call_id": "call_1", "name": "lookup", "arguments": '{"id": 7}'},
    ),
    "latency": (LatencyMeasured("answer", 412.5), {"kind": "answer", "ms": 412.5}),
    "fatal_problem": (
        ProblemNoted("twilio", "invalid_json", "bad frame", fatal=True),
        {"source": "twilio", "reason": "invalid_json", "message": "bad frame", "fatal": True},
    ),
}


@pytest.mark.parametrize(("action", "body"), BODIES.values(), ids=BODIES.keys())
def test_every_field_of_an_event_carries_its_own_value(
    action: Action, body: dict[str, object]
) -> None:
    event = live_event("c1", action, 0.0)
    assert event is not None
    assert {k: v for k, v in event.items() if k not in ("call_id", "at", "type")} == body
