"""``switchboard call``: place a call through the API and print it as it happens;
``switchboard hangup``: hang up a live call.

Ctrl-C stops following a call, not the call: it goes on, and the line printed
says how to hang it up. The client's errors are reworded here for a person at a
terminal (a server that is not running, or that went away mid-call).
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import httpx
from websockets.exceptions import WebSocketException

from serve.client import ApiError, SwitchboardClient
from switchboard.transcript import heard_prefix

__all__ = ["follow_call", "hang_up_call"]

FINAL = {"completed", "busy", "no-answer", "failed", "canceled"}


def describe(event: dict[str, object], said: dict[str, str] | None = None) -> str | None:
    """One line for a live event, or ``None`` for the ones a person need not see.

    ``said``: each agent reply's text so far, by item, kept up here from the deltas, so a
    cut reply shows what the caller heard of it (its words come before they are heard).
    """
    said = {} if said is None else said
    item = str(event.get("item_id", ""))
    match event.get("type"):
        case "transcript.caller":
            return f"caller: {event['text']}"
        case "transcript.agent_delta":
            offset = event.get("offset")
            text = said.get(item, "")
            cut = len(text) if not isinstance(offset, int) else offset
            said[item] = text[:cut] + str(event.get("delta", ""))
            return None
        case "transcript.agent_done":
            said[item] = str(event["text"])
            return f"agent:  {event['text']}"
        case "transcript.agent_interrupted":
            heard_ms, generated_ms = event["heard_ms"], event["generated_ms"]
            line = f"agent:  (cut off after {heard_ms} ms of {generated_ms} ms"
            words = said.get(item)
            if words is None or not (isinstance(heard_ms, int) and isinstance(generated_ms, int)):
                return line + ")"  # joined after its words: what they were is not known here
            heard = heard_prefix(words, heard_ms, generated_ms) or "nothing"
            return f"{line}; the caller heard: {heard})"
        case "tool.called":
            return f"tool:   {event['name']}({event['arguments']})"
        case "latency":
            return f"wait:   {event['kind']} {event['ms']} ms"
        case "call.status":
            return f"status: {event.get('status')}"
        case "problem":
            return f"note:   {event.get('source')} {event.get('reason')}: {event.get('message')}"
        case "call.ended":
            return f"ended:  {event['reason']}"
        case _:
            return None


def _unreachable(exc: ApiError) -> bool:
    """The server could not be reached at all (nothing listens there)."""
    return exc.status is None and isinstance(exc.__cause__, httpx.ConnectError)


def _went_away(exc: ApiError) -> bool:
    """The server stopped answering: its socket broke, or it no longer listens."""
    cause = exc.__cause__
    return exc.status is None and isinstance(
        cause, httpx.TransportError | OSError | WebSocketException
    )


def _reworded(exc: ApiError) -> ApiError:
    """``exc`` as a person at a terminal is best told it."""
    if _unreachable(exc):
        return ApiError(None, f"{exc} (is it running? start it with `make run`)", exc.body)
    return exc


def _hang_up_hint(call_id: str) -> str:
    return (
        f"call {call_id} is still live: hang it up with `switchboard hangup {call_id}` "
        f"(or POST /calls/{call_id}/hangup with the API token)"
    )


async def follow_call(
    url: str,
    token: str,
    to: str,
    instruction: str,
    *,
    voice: str | None = None,
    greeting: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Place the call and print its events until it has ended; its final status decides
    the exit code. Cancelled (Ctrl-C), it prints one line to ``err`` on what became of
    the call, then lets the cancellation go on."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    async with SwitchboardClient(url, token, timeout=60.0) as client:
        try:
            call = await client.place_call(to, instruction, voice=voice, greeting=greeting)
        except ApiError as exc:
            raise _reworded(exc) from exc
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C, however it came
            print(
                "switchboard: interrupted while placing the call: it may have been placed "
                "(GET /calls or the web console lists it)",
                file=err,
                flush=True,
            )
            raise
        print(f"call {call.id} to {call.to}: {call.status}", file=out, flush=True)
        ended = status_final = False
        said: dict[str, str] = {}
        try:
            async for event in client.stream_events(call.id):
                line = describe(event, said)
                if line is not None:
                    print(line, file=out, flush=True)
                ended = ended or event.get("type") == "call.ended"
                status_final = status_final or (
                    event.get("type") == "call.status" and event.get("status") in FINAL
                )
                if ended and status_final:
                    break
            detail = await client.get_call(call.id)
        except ApiError as exc:
            if _went_away(exc):
                raise ApiError(
                    None,
                    f"the server went away during call {call.id} ({exc}): the call's state "
                    f"is unknown; once Switchboard is back, GET /calls/{call.id} tells it",
                ) from exc
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C, however it came
            if ended:
                print(f"switchboard: interrupted; call {call.id} has ended", file=err, flush=True)
            else:
                print(f"switchboard: interrupted; {_hang_up_hint(call.id)}", file=err, flush=True)
            raise
    print(f"final status: {detail.status}, cost ~${detail.cost_usd}", file=out)
    return 0 if detail.status == "completed" else 1


async def hang_up_call(url: str, token: str, call_id: str, out: TextIO | None = None) -> int:
    """``POST /calls/{id}/hangup``; the call ends shortly after (its events say when)."""
    async with SwitchboardClient(url, token) as client:
        try:
            answer = await client.hang_up(call_id)
        except ApiError as exc:
            raise _reworded(exc) from exc
    print(f"hang-up requested for call {answer.id}", file=sys.stdout if out is None else out)
    return 0
