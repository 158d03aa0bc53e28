"""``switchboard call``: place a call through the API and print it as it happens;
``switchboard hangup``: hang up a live call.

Ctrl-C stops following a call, not the call: it goes on, and the line printed
says how to hang it up. The client's errors are reworded here for a person at a
terminal (a server that is not running, or that went away mid-call).

A call's event stream can end while the call goes on in its actor: the ingress
replica serving it shut down or was redeployed, or it dropped a viewer that fell
behind. The command then asks for the call and, if it is still live, follows it
again, a few times with a back-off. The server replays a call's recent events to
a new viewer first; what was printed already is not printed again. A call can
also end with a final ``call.status`` and no ``call.ended`` (the reconciler
settles a call that no actor serves): a final status is its end once
``call.ended`` has had a short grace to follow it.

Exit status: 0 when the call completed, 1 when it ended otherwise, 3 when it is
still live but could not be followed any longer (the line printed says how to
hang it up); ``switchboard.cli`` adds 2 for an error and 130 for Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import TextIO

import httpx
import orjson
from websockets.exceptions import WebSocketException

from serve.client import ApiError, SwitchboardClient
from serve.ports import SUBSCRIPTION_DROPPED
from serve.schemas import CallDetailOut
from switchboard.store.status import TERMINAL_STATUSES
from switchboard.transcript import heard_prefix

__all__ = ["STILL_LIVE", "follow_call", "hang_up_call"]

FINAL = TERMINAL_STATUSES
STILL_LIVE = 3  # exit status: the call goes on, but its events could not be followed
ENDED_GRACE_S = 2.0  # after a final status, how long its call.ended may take to come
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # one wait per try to follow a call again
SEEN_LIMIT = 1024  # events remembered as printed: more than a server replays of one call


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
        case "call.status" if event.get("message"):  # settled: why (no call.ended follows)
            return f"status: {event.get('status')} ({event['message']})"
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


def _transient(exc: ApiError) -> bool:
    """The server is away or busy for now (a replica restarting): worth asking again."""
    return _went_away(exc) or (exc.status is not None and exc.status >= 500)


class _Shown:
    """What has been shown of one call's events, so that following it again, which
    replays its recent events first, prints none twice. Events carry no number: one is
    known by its whole content (its ``at`` with it), the same for every viewer."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.said: dict[str, str] = {}  # for describe
        self.ended = False  # call.ended came
        self.final = False  # a final call.status came
        self.done = False  # both, or a final status and call.ended's grace ran out
        self.grace_ends: float | None = None  # loop time: call.ended's grace, once final
        self.new = 0  # events shown
        self._order: deque[bytes] = deque()
        self._seen: set[bytes] = set()

    def show(self, event: dict[str, object]) -> None:
        key = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        if key in self._seen:
            return
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > SEEN_LIMIT:
            self._seen.discard(self._order.popleft())
        self.new += 1
        line = describe(event, self.said)
        if line is not None:
            print(line, file=self.out, flush=True)
        kind = event.get("type")
        self.ended = self.ended or kind == "call.ended"
        self.final = self.final or (kind == "call.status" and event.get("status") in FINAL)
        self.done = self.done or (self.ended and self.final)


async def _read(
    events: AsyncGenerator[dict[str, object], None], shown: _Shown, err: TextIO, grace_s: float
) -> bool:
    """Show one stream's events (and why the server dropped this viewer, if it did);
    True once the call is over (``shown.done``), False if the stream ended first."""
    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(events):
        while not shown.done:
            if shown.final and shown.grace_ends is None:
                shown.grace_ends = loop.time() + grace_s
            try:
                # A final status with no call.ended yet: the grace is a deadline from the
                # status, not a wait that each later event (levels, say) starts again.
                async with asyncio.timeout_at(shown.grace_ends) as grace:
                    event = await anext(events)
            except StopAsyncIteration:
                return False
            except TimeoutError:
                if not grace.expired():
                    raise
                shown.done = True  # settled with no actor to say call.ended
                break
            if event.get("type") == SUBSCRIPTION_DROPPED:  # the stream ends after it
                reason = event.get("reason") or "no reason given"
                print(
                    f"switchboard: the server dropped this viewer: {reason}", file=err, flush=True
                )
                continue
            shown.show(event)
    return True


async def _follow(
    client: SwitchboardClient,
    call_id: str,
    shown: _Shown,
    err: TextIO,
    grace_s: float,
    backoff_s: Sequence[float],
) -> CallDetailOut | None:
    """Show the call's events until it is over, following it again when its stream ends
    first while it goes on; then its detail. ``None``: it is still live, but the last
    ``len(backoff_s)`` tries to follow it again brought no new event."""
    tries = 0
    while True:
        before = shown.new
        failure: ApiError | None = None
        try:
            if await _read(client.stream_events(call_id), shown, err, grace_s):
                return await client.get_call(call_id)
            detail = await client.get_call(call_id)
            if detail.status in FINAL:
                return detail
            why = f"the event stream ended while the call is {detail.status}"
        except ApiError as exc:
            if not _transient(exc):
                raise
            failure, why = exc, str(exc)
        if shown.new > before:
            tries = 0  # it was followed again: this is a new interruption
        if tries == len(backoff_s):
            if failure is not None:
                raise failure
            return None
        print(
            f"switchboard: {why}; following call {call_id} again in {backoff_s[tries]:g} s",
            file=err,
            flush=True,
        )
        await asyncio.sleep(backoff_s[tries])  # a back-off for the server, not a sync
        tries += 1


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
    grace_s: float | None = None,
    backoff_s: Sequence[float] | None = None,
) -> int:
    """Place the call and print its events until it has ended; the exit status then says
    how it ended (the module docstring). Cancelled (Ctrl-C), it prints one line to
    ``err`` on what became of the call, then lets the cancellation go on. ``grace_s`` and
    ``backoff_s`` default to ``ENDED_GRACE_S`` and ``RECONNECT_BACKOFF_S``."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    grace_s = ENDED_GRACE_S if grace_s is None else grace_s
    backoff_s = RECONNECT_BACKOFF_S if backoff_s is None else backoff_s
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
        shown = _Shown(out)
        try:
            detail = await _follow(client, call.id, shown, err, grace_s, backoff_s)
        except ApiError as exc:
            if _went_away(exc):
                raise ApiError(
                    None,
                    f"the server went away during call {call.id} ({exc}): the call's state "
                    f"is unknown; once Switchboard is back, GET /calls/{call.id} tells it",
                ) from exc
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C, however it came
            if shown.ended or shown.final:
                print(f"switchboard: interrupted; call {call.id} has ended", file=err, flush=True)
            else:
                print(f"switchboard: interrupted; {_hang_up_hint(call.id)}", file=err, flush=True)
            raise
    if detail is None:
        print(
            f"switchboard: stopped following: its event stream keeps ending; "
            f"{_hang_up_hint(call.id)}",
            file=err,
            flush=True,
        )
        return STILL_LIVE
    print(f"final status: {detail.status}, cost ~${detail.cost_usd}", file=out)
    return 0 if detail.status == "completed" else 1


async def hang_up_call(
    url: str, token: str, call_id: str, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``POST /calls/{id}/hangup``; the call ends shortly after (its events say when).
    Cancelled (Ctrl-C), it prints one line to ``err``, then lets the cancellation go on."""
    async with SwitchboardClient(url, token) as client:
        try:
            answer = await client.hang_up(call_id)
        except ApiError as exc:
            raise _reworded(exc) from exc
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C, however it came
            print(
                f"switchboard: interrupted; the hang-up of call {call_id} may have been "
                f"requested (GET /calls/{call_id} tells whether it has ended)",
                file=sys.stderr if err is None else err,
                flush=True,
            )
            raise
    print(f"hang-up requested for call {answer.id}", file=sys.stdout if out is None else out)
    return 0
