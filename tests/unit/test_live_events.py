from __future__ import annotations

import json

from switchboard.call_actions import (
    AgentTurnInterrupted,
    CallerTurnTranscribed,
    ForwardCallerAudio,
    UsageReported,
)
from switchboard.live_events import live_event
from switchboard.realtime_events import Usage


def test_notices_become_json_events_with_utc_times() -> None:
    event = live_event("c1", CallerTurnTranscribed("item_1", "Hello?"), 1_700_000_000.25)
    assert event == {
        "call_id": "c1",
        "type": "caller.said",
        "at": "2023-11-14T22:13:20.250000+00:00",
        "item_id": "item_1",
        "text": "Hello?",
    }
    cut = live_event("c1", AgentTurnInterrupted("item_2", 640, 3000), 0.0)
    assert cut is not None
    assert (cut["type"], cut["heard_ms"], cut["generated_ms"]) == ("agent.interrupted", 640, 3000)
    usage = live_event("c1", UsageReported("resp_1", Usage(30, 10, 20)), 0.0)
    assert usage is not None
    assert (usage["type"], usage["total_tokens"], usage["response_id"]) == ("usage", 30, "resp_1")
    json.dumps([event, cut, usage])  # plain JSON all the way down


def test_audio_and_protocol_commands_are_not_events() -> None:
    assert live_event("c1", ForwardCallerAudio("AAAA"), 0.0) is None
