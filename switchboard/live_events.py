"""Policy actions as live events: the JSON the console and ``switchboard call`` read.

Every event is ``{"call_id", "type", "at", ...}`` with ``at`` in ISO 8601 UTC.
Only what a person watching the call cares about becomes an event; audio and
protocol commands do not.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    FinishCall,
    HangUp,
    PhaseChanged,
    ProblemNoted,
    RunTool,
    ToolReturned,
    UsageReported,
)

__all__ = ["live_event"]

_TYPES: dict[type, str] = {
    PhaseChanged: "phase",
    CallerTurnStarted: "caller.started",
    CallerTurnTranscribed: "caller.said",
    ToolReturned: "tool.result",
    AgentTurnStarted: "agent.started",
    AgentTranscriptGrew: "agent.delta",
    AgentTurnFinished: "agent.said",
    AgentTurnInterrupted: "agent.interrupted",
    RunTool: "tool.call",
    UsageReported: "usage",
    ProblemNoted: "problem",
    HangUp: "hangup",
    FinishCall: "ended",
}


def live_event(call_id: str, action: Action, at: float) -> dict[str, object] | None:
    """The event for ``action`` at unix time ``at``, or ``None`` if it is not one."""
    kind = _TYPES.get(type(action))
    if kind is None:
        return None
    fields = asdict(action)
    if isinstance(action, UsageReported):
        fields = {"response_id": action.response_id, **asdict(action.usage)}
    return {
        "call_id": call_id,
        "type": kind,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        **fields,
    }
