"""Policy actions as live events: the JSON the console and ``switchboard call`` read.

Every event is ``{"call_id", "type", "at", ...}`` with ``at`` in ISO 8601 UTC.
Only what a person watching the call cares about becomes an event: the
policy's notices (:func:`notice_event`), the tools it runs and how the call
ends. Audio and protocol commands never do.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import assert_never

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

__all__ = ["live_event", "notice_event"]

_NOTICES = (
    PhaseChanged,
    CallerTurnStarted,
    CallerTurnTranscribed,
    AgentTurnStarted,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    ToolReturned,
    LatencyMeasured,
    UsageReported,
    ProblemNoted,
    CallStatusChanged,
    LevelsMeasured,
)


def live_event(call_id: str, action: Action, at: float) -> dict[str, object] | None:
    """The event for ``action`` at unix time ``at``, or ``None`` if it is not one."""
    match action:
        case RunTool(call_id=tool_call_id, name=name, arguments=arguments):
            body: dict[str, object] = {
                "type": "tool.called",
                "tool_call_id": tool_call_id,
                "name": name,
                "arguments": arguments,
            }
        case HangUp(reason=reason):
            body = {"type": "call.hanging_up", "reason": reason}
        case RenewSession(reason=reason):
            body = {"type": "session.renewed", "reason": reason}
        case FinishCall(reason=reason):
            body = {"type": "call.ended", "reason": reason}
        case _ if isinstance(action, _NOTICES):
            body = notice_event(action)
        case _:
            return None
    return {"call_id": call_id, "at": datetime.fromtimestamp(at, UTC).isoformat(), **body}


def notice_event(notice: Notice) -> dict[str, object]:
    """The live event for one of the call policy's notices (publish it with the call id)."""
    match notice:
        case PhaseChanged(old=old, new=new):
            return {"type": "call.phase", "old": old, "new": new}
        case CallerTurnStarted(item_id=item_id):
            return {"type": "transcript.caller_started", "item_id": item_id}
        case CallerTurnTranscribed(item_id=item_id, text=text):
            return {"type": "transcript.caller", "item_id": item_id, "text": text}
        case AgentTurnStarted(item_id=item_id):
            return {"type": "transcript.agent_started", "item_id": item_id}
        case AgentTranscriptGrew(item_id=item_id, delta=delta, offset=offset):
            # The offset lets a viewer place a delta it missed the start of, and skip one
            # it is sent twice (a report sent again after a recorder restart).
            grew: dict[str, object] = {
                "type": "transcript.agent_delta",
                "item_id": item_id,
                "delta": delta,
            }
            return grew if offset is None else grew | {"offset": offset}
        case AgentTurnFinished(item_id=item_id, transcript=transcript):
            return {"type": "transcript.agent_done", "item_id": item_id, "text": transcript}
        case AgentTurnInterrupted(item_id=item_id, heard_ms=heard, generated_ms=generated, by=by):
            return {
                "type": "transcript.agent_interrupted",
                "item_id": item_id,
                "heard_ms": heard,
                "generated_ms": generated,
                "by": by,
            }
        case ToolReturned(call_id=tool_call_id, output=output):
            return {"type": "tool.returned", "tool_call_id": tool_call_id, "output": output}
        case LatencyMeasured(kind=kind, ms=ms):
            return {"type": "latency", "kind": kind, "ms": ms}
        case UsageReported(response_id=response_id, usage=usage):
            return {"type": "usage", "response_id": response_id, "usage": asdict(usage)}
        case ProblemNoted(source=source, reason=reason, message=text, fatal=fatal):
            return {
                "type": "problem",
                "source": source,
                "reason": reason,
                "message": text,
                "fatal": fatal,
            }
        case CallStatusChanged(status=status):
            return {"type": "call.status", "status": status}
        case LevelsMeasured(caller_dbfs=caller, agent_dbfs=agent):
            return {"type": "levels", "caller_dbfs": caller, "agent_dbfs": agent}
    assert_never(notice)
