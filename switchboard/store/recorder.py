"""Record what the call policy says in the store.

The call shell hands every action the policy returns to :func:`record` (one)
or :func:`record_batch` (a call actor's report); audio and protocol commands
are not part of a call's record and are ignored. Each notice maps to a store
write:

- transcript notices -> turns (``CallerTurnStarted`` reserves the caller's place);
  the call's end (``FinishCall``, a terminal ``CallStatusChanged``) closes the turns
  left open: no transcript will fill a caller's, and a reply still speaking then (its
  actor died) is cut with nothing known heard (``switchboard.store.turns``);
- ``AgentTurnInterrupted`` -> the cut, plus an ``interruption`` timeline event;
- ``UsageReported`` -> usage; ``CallStatusChanged`` -> the call's status;
- ``PhaseChanged`` / ``ProblemNoted`` / ``RunTool`` / ``ToolReturned`` /
  ``LatencyMeasured`` / ``HangUp`` / ``RenewSession`` / ``FinishCall`` ->
  timeline events.

A batch writes its timeline events in one transaction, after its other writes
are on disk (the timeline is read in time order, and one transaction per phase
change was most of the recorder's work). Given ``progress`` (the sender, and how
many of its actions are recorded once the batch is), that transaction also notes
it, so a batch sent again can skip them: every other write is idempotent (turns
by item and offset, usage by response, a status by its status and time), the
timeline's events are not. An action with a value the store refuses
(:class:`~switchboard.errors.StoreInputError`: a malformed id, an item id used for
both sides, a latency that is not a number) is noted on the timeline as a
``problem`` and the rest of the batch is written; the database failing
(:class:`~switchboard.errors.StoreError`) fails the batch, to be sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from switchboard.errors import StoreInputError
from switchboard.store import validation as check
from switchboard.store.repository import CallStore
from switchboard.store.status import is_terminal

__all__ = ["Recordable", "record", "record_batch"]

Recordable = Action
TimelineEntry = tuple[str, datetime, dict[str, object]]


async def record(store: CallStore, call_id: str, message: Recordable, at: datetime) -> None:
    """Write ``message`` of call ``call_id``, which happened at ``at``, to ``store``."""
    await record_batch(store, call_id, [(message, at)])


async def record_batch(
    store: CallStore,
    call_id: str,
    batch: Sequence[tuple[Recordable, datetime]],
    progress: tuple[str, int] | None = None,
) -> list[tuple[Recordable, datetime]]:
    """Write a call's messages, in the order they happened; ``progress`` is noted with
    their timeline events (module docstring). Returns the messages written: all but a
    ``FinishCall`` for a call that has ended before (its actor died in its wrap-up, say,
    and the pool reported an end too): a call ends once."""
    ends = any(type(message) is FinishCall for message, _ in batch)
    if ends and await store.finish_reason(call_id) is not None:
        batch = [(message, at) for message, at in batch if type(message) is not FinishCall]
    closes = ends or any(_terminal(message) for message, _ in batch)
    timeline: list[TimelineEntry] = []
    for message, at in batch:
        try:
            entry = await _write_apart(store, call_id, message, at)
            if entry is not None:  # checked alone: one bad event must not refuse the others
                timeline.append(check.timeline_event(entry[0], at, entry[1]))
        except StoreInputError as exc:
            # A value the store refuses (a peer's, say) is noted, not retried: the call's
            # actor would send the batch again forever, and nothing after it would be kept.
            # Anything else (the database failing) is raised: the batch is sent again.
            refused = f"{type(message).__name__} not recorded: {exc}"
            noted: dict[str, object] = {"source": "store", "reason": "unrecordable"}
            timeline.append(("problem", at, noted | {"message": refused}))
    # On disk before the batch is acknowledged: a recorder that died after taking it
    # would lose what it held back (the call actor never sends a taken batch again).
    # Before the timeline too, which may note the batch as recorded.
    if closes:
        await store.flush_turns(call_id)  # every turn of this call, not every call's
        # Caller turns and replies left open, and their buffer (a recorder outlives calls).
        ends_at = [at for message, at in batch if type(message) is FinishCall or _terminal(message)]
        await store.close_caller_turns(call_id, min(ends_at, default=None))
    elif grown := [m.item_id for m, _ in batch if type(m) is AgentTranscriptGrew]:
        await store.flush_turns(call_id, grown)
    if timeline:
        await store.append_events(call_id, timeline, progress)
    return list(batch)


async def _write_apart(
    store: CallStore, call_id: str, message: Recordable, at: datetime
) -> tuple[str, dict[str, object]] | None:
    """Write what is not a timeline event; return the timeline event, if any."""
    match message:
        case CallerTurnStarted(item_id=item_id):
            await store.reserve_caller_turn(call_id, item_id, at)
        case CallerTurnTranscribed(item_id=item_id, text=text):
            await store.record_caller_turn(call_id, item_id, text, at)
        case AgentTurnStarted(item_id=item_id):
            await store.start_agent_turn(call_id, item_id, at)
        case AgentTranscriptGrew(item_id=item_id, delta=delta, offset=offset):
            await store.grow_agent_turn(call_id, item_id, delta, offset)
        case AgentTurnFinished(item_id=item_id, transcript=transcript):
            await store.finish_agent_turn(call_id, item_id, transcript, at)
        case AgentTurnInterrupted(item_id=item_id, heard_ms=heard, generated_ms=generated, by=by):
            await store.cut_agent_turn(call_id, item_id, heard, generated, at)
            cut = {"item_id": item_id, "heard_ms": heard, "generated_ms": generated, "by": by}
            return "interruption", cut
        case UsageReported(response_id=response_id, usage=usage):
            await store.add_usage(call_id, response_id, usage)
        case CallStatusChanged(status=status):
            await store.update_status(call_id, status, at, {"by": "switchboard"})
        case _:
            return _timeline_event(message)
    return None


def _terminal(message: Recordable) -> bool:
    return type(message) is CallStatusChanged and is_terminal(message.status)


def _timeline_event(message: Recordable) -> tuple[str, dict[str, object]] | None:
    match message:
        case PhaseChanged(old=old, new=new):
            return "phase", {"old": old, "new": new}
        case ProblemNoted(source=source, reason=reason, message=text, fatal=fatal):
            return "problem", {"source": source, "reason": reason, "message": text, "fatal": fatal}
        case RunTool(call_id=tool_call, name=name, arguments=arguments):
            return "tool_call", {"tool_call_id": tool_call, "name": name, "arguments": arguments}
        case ToolReturned(call_id=tool_call, output=output):
            return "tool_result", {"tool_call_id": tool_call, "output": output}
        case LatencyMeasured(kind=kind, ms=ms):
            return "latency", {"kind": kind, "ms": ms}
        case HangUp(reason=reason):
            return "hangup", {"reason": reason}
        case RenewSession(reason=reason, attempt=attempt):
            return "session_renewed", {"reason": reason} | (
                {"attempt": attempt} if attempt > 1 else {}
            )
        case FinishCall(reason=reason):
            return "finished", {"reason": reason}
        case _:
            return None  # audio and protocol commands are not part of the record
