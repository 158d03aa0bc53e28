"""WebSocket handlers for live events: ``/calls/{id}/events`` and ``/events``.

Authentication happens before the handshake completes: a bad or missing token
closes with 1008 before ``accept`` (the server answers the upgrade with 403).
After ``accept`` two tasks run in one task group: a sender that forwards the
feed's messages as JSON text, and a receiver that only waits for the client to
go. Whichever ends first cancels the other, because under Ray Serve ``send_text`` never raises
when the client hangs up; only ``receive`` sees the disconnect
(ray-notes, "Serve pitfalls"). Without the receiver a departed client's
subscription would live as long as the feed.

Close codes: 1013 (try again later) when the feed dropped a subscriber that
fell behind, with the feed's reason; 1001 when the feed ended (shutdown);
4404 for an unknown call id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import WebSocket, WebSocketDisconnect

from serve.auth import TokenChecker, websocket_auth
from serve.ports import SUBSCRIPTION_DROPPED, AppDeps
from switchboard.errors import StoreError

__all__ = ["CLOSE_DROPPED", "CLOSE_UNKNOWN_CALL", "stream_events"]

log = logging.getLogger("switchboard.serve")
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001
CLOSE_DROPPED = 1013
CLOSE_UNKNOWN_CALL = 4404
CLOSE_SERVER_ERROR = 1011
_MAX_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes


def _reason(text: str) -> str:
    return text.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")


async def _forward(ws: WebSocket, feed: AsyncIterator[dict[str, object]]) -> tuple[int, str]:
    """Send every message; return the close code and reason once the feed ends."""
    async for message in feed:
        await ws.send_text(json.dumps(message, default=str, separators=(",", ":")))
        if message.get("type") == SUBSCRIPTION_DROPPED:
            return CLOSE_DROPPED, _reason(str(message.get("reason") or "subscriber dropped"))
    return CLOSE_GOING_AWAY, "event feed closed"


async def _until_disconnect(ws: WebSocket) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        # Clients have nothing to say on this socket; their messages are ignored.


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
                    close = await _forward(ws, feed)
                except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                    log.debug("event stream client went away mid-send: %s", exc)
                except Exception:
                    log.exception("live event stream of %s failed", call_id or "all calls")
                finally:
                    group.cancel_scope.cancel()

            async def watch() -> None:
                try:
                    await _until_disconnect(ws)
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
