"""Record what the call policy says in the store.

The call shell hands every action the policy returns to :func:`record`; audio
and protocol commands are not part of a call's record and are ignored. Each
notice maps to one store write:

- transcript notices -> turns (``CallerTurnStarted`` reserves the caller's place);
- ``AgentTurnInterrupted`` -> the cut, plus an ``interruption`` timeline event;
- ``UsageReported`` -> usage; ``CallStatusChanged`` -> the call's status;
- ``PhaseChanged`` / ``ProblemNoted`` / ``RunTool`` / ``ToolReturned`` /
  ``HangUp`` / ``FinishCall`` -> timeline events.
"""

from __future__ import annotations

from datetime import datetime

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
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    ToolReturned,
    UsageReported,
)
from switchboard.store.repository import CallStore

__all__ = ["Recordable", "record"]

Recordable = Action


async def record(store: CallStore, call_id: str, message: Recordable, at: datetime) -> None:
    """Write ``message`` of call ``call_id``, which happened at ``at``, to ``store``."""
    match message:
        case CallerTurnStarted(item_id=item_id):
            await store.reserve_caller_turn(call_id, item_id, at)
        case CallerTurnTranscribed(item_id=item_id, text=text):
            await store.record_caller_turn(call_id, item_id, text, at)
        case AgentTurnStarted(item_id=item_id):
            await store.start_agent_turn(call_id, item_id, at)
        case AgentTranscriptGrew(item_id=item_id, delta=delta):
            await store.grow_agent_turn(call_id, item_id, delta)
        case AgentTurnFinished(item_id=item_id, transcript=transcript):
            await store.finish_agent_turn(call_id, item_id, transcript)
        case AgentTurnInterrupted(item_id=item_id, heard_ms=heard, generated_ms=generated):
            await store.cut_agent_turn(call_id, item_id, heard, generated)
            data: dict[str, object] = {
                "item_id": item_id,
                "heard_ms": heard,
                "generated_ms": generated,
            }
            await store.append_event(call_id, "interruption", at, data)
        case UsageReported(response_id=response_id, usage=usage):
            await store.add_usage(call_id, response_id, usage)
        case PhaseChanged(old=old, new=new):
            await store.append_event(call_id, "phase", at, {"old": old, "new": new})
        case ProblemNoted(source=source, reason=reason, message=text, fatal=fatal):
            problem: dict[str, object] = {"source": source, "reason": reason, "message": text}
            await store.append_event(call_id, "problem", at, problem | {"fatal": fatal})
        case RunTool(call_id=tool_call, name=name, arguments=arguments):
            tool: dict[str, object] = {"tool_call_id": tool_call, "name": name}
            await store.append_event(call_id, "tool_call", at, tool | {"arguments": arguments})
        case ToolReturned(call_id=tool_call, output=output):
            result: dict[str, object] = {"tool_call_id": tool_call, "output": output}
            await store.append_event(call_id, "tool_result", at, result)
        case LatencyMeasured(kind=kind, ms=ms):
            await store.append_event(call_id, "latency", at, {"kind": kind, "ms": ms})
        case CallStatusChanged(status=status):
            await store.update_status(call_id, status, at, {"by": "switchboard"})
        case HangUp(reason=reason):
            await store.append_event(call_id, "hangup", at, {"reason": reason})
        case RenewSession(reason=reason):
            await store.append_event(call_id, "session_renewed", at, {"reason": reason})
        case FinishCall(reason=reason):
            await store.append_event(call_id, "finished", at, {"reason": reason})
            await store.flush()
        case _:
            pass  # audio and protocol commands are not part of the record
