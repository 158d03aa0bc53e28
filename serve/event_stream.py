"""WebSocket handlers for live events: ``/calls/{id}/events`` and ``/events``.

Authentication happens before the handshake completes: a bad or missing token
closes with 1008 before ``accept`` (the server answers the upgrade with 403).
After ``accept`` two tasks run in one task group: a sender that forwards the
feed's messages as JSON text, and a receiver that only waits for the client to
go. Whichever ends first cancels the other, because under Ray Serve ``send_text`` never raises
when the client hangs up; only ``receive`` sees the disconnect
(ray-notes, "Serve pitfalls"). Without the receiver a departed client's
subscription would live as long as the feed.

A slow viewer is one whose ``send_text`` waits (plain uvicorn waits for the
socket) while the feed's bounded queue fills. Under Ray Serve's proxy
``send_text`` never waits: the replica streams each message to the proxy at once,
without backpressure, so what a viewer has not read would pile up in the proxy.
So viewers acknowledge: every ``ACK_EVERY`` events (or sooner) a client sends
``{"ack": n}``, ``n`` the events it has received on this socket; one that leaves
more than ``UNACKED_LIMIT`` unacknowledged is closed 1013 and may reconnect. The
console and ``serve/client.py`` do. Any other message from the client closes the
socket 1007 saying what was expected.

Close codes: 1013 (try again later) when the feed dropped a subscriber that
fell behind, with the feed's reason, or the viewer left too many events
unacknowledged; 1007 for a client message that is not an acknowledgement; 1001
when the feed ended (shutdown); 4404 for an unknown call id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping

import anyio
from fastapi import WebSocket, WebSocketDisconnect

from serve.auth import TokenChecker, websocket_auth
from serve.ports import SUBSCRIPTION_DROPPED, AppDeps
from switchboard.errors import StoreError

__all__ = [
    "ACK_EVERY",
    "CLOSE_BAD_MESSAGE",
    "CLOSE_DROPPED",
    "CLOSE_UNKNOWN_CALL",
    "UNACKED_LIMIT",
    "stream_events",
]

log = logging.getLogger("switchboard.serve")
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
CLOSE_DROPPED = 1013
CLOSE_UNKNOWN_CALL = 4404
CLOSE_SERVER_ERROR = 1011
CLOSE_BAD_MESSAGE = 1007
ACK_EVERY = 100  # what clients are asked to do
UNACKED_LIMIT = 2048  # events sent and not acknowledged before a viewer is let go
_MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes


def _reason(text: str) -> str:
    return text.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")


class _Window:
    """Events sent on one socket, and how many of them the viewer acknowledged."""

    __slots__ = ("acked", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0


async def _forward(
    ws: WebSocket, feed: AsyncIterator[dict[str, object]], window: _Window
) -> tuple[int, str]:
    """Send every message; return the close code and reason once the feed ends, or the
    viewer stopped acknowledging."""
    async for message in feed:
        window.sent += 1  # before: the viewer may acknowledge it before send_text returns
        await ws.send_text(json.dumps(message, default=str, separators=(",", ":")))
        if message.get("type") == SUBSCRIPTION_DROPPED:
            return CLOSE_DROPPED, _reason(str(message.get("reason") or "subscriber dropped"))
        if window.sent - window.acked > UNACKED_LIMIT:
            return CLOSE_DROPPED, _reason(
                f"{window.sent - window.acked} events not acknowledged: reconnect"
            )
    return CLOSE_GOING_AWAY, "event feed closed"


def _ack(message: Mapping[str, object], window: _Window) -> str | None:
    """Take a client message as an acknowledgement; else say what was wrong."""
    text = message.get("text")
    if not isinstance(text, str):
        return 'binary message: expected text {"ack": <events received>}'
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        parsed = None
    count = parsed.get("ack") if isinstance(parsed, dict) and len(parsed) == 1 else None
    if type(count) is not int:
        return 'expected {"ack": <events received>}'
    if not window.acked <= count <= window.sent:
        return f"ack {count} is not between {window.acked} and the {window.sent} events sent"
    window.acked = count
    return None


async def _until_disconnect(ws: WebSocket, window: _Window) -> tuple[int, str] | None:
    """Read acknowledgements until the client goes (None) or sends something else."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        wrong = _ack(message, window)
        if wrong is not None:
            return CLOSE_BAD_MESSAGE, _reason(wrong)


async def stream_events(
    ws: WebSocket, deps: AppDeps, checker: TokenChecker, call_id: str | None
) -> None:
    auth = websocket_auth(
        checker, ws.headers.get("authorization"), ws.scope.get("subprotocols") or ()
    )
    if not auth.accepted:
        await ws.close(code=CLOSE_POLICY, reason=_reason(auth.reason))
        return
    try:
        known = call_id is None or await deps.store.get_call(call_id) is not None
    except StoreError as exc:  # a close that says why, not an HTTP 500 on the upgrade
        log.error("call store error on the live events of %s: %s", call_id, exc)
        await ws.accept(subprotocol=auth.subprotocol)
        await ws.close(code=CLOSE_SERVER_ERROR, reason=_reason(f"call store error: {exc}"))
        return
    if not known:
        await ws.accept(subprotocol=auth.subprotocol)
        await ws.close(code=CLOSE_UNKNOWN_CALL, reason=_reason(f"unknown call id {call_id}"))
        return
    feed = deps.events.subscribe(call_id)
    window = _Window()
    close: tuple[int, str] | None = None
    try:
        await ws.accept(subprotocol=auth.subprotocol)
        # An anyio task group, as Starlette itself uses: whichever side ends
        # first cancels the other, and a cancellation from outside (server
        # shutdown) reaches both.
        async with anyio.create_task_group() as group:

            async def send_all() -> None:
                nonlocal close
                try:
                    close = await _forward(ws, feed, window)
                except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                    log.debug("event stream client went away mid-send: %s", exc)
                except Exception:
                    log.exception("live event stream of %s failed", call_id or "all calls")
                finally:
                    group.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal close
                try:
                    close = await _until_disconnect(ws, window)
                except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                    log.debug("event stream receive failed: %s", exc)
                finally:
                    group.cancel_scope.cancel()

            group.start_soon(send_all)
            group.start_soon(watch)
        if close is not None:
            with contextlib.suppress(Exception):  # the client may be gone already
                await ws.close(code=close[0], reason=close[1])
    finally:
        aclose = getattr(feed, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()
