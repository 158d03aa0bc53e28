"""Adapters from WebSocket libraries to the shell's ``TextSocket``.

Each translates its library's close exception into ``SocketClosed`` at this
one boundary, so the shell never sees a foreign exception.
"""

from __future__ import annotations

from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from switchboard.errors import SocketClosed

__all__ = ["RealtimeSocket", "WebsocketsSocket"]


def _closed(exc: ConnectionClosed) -> SocketClosed:
    frame = exc.rcvd or exc.sent
    return SocketClosed(frame.code if frame else None, frame.reason if frame else "")


class WebsocketsSocket:
    """A ``websockets`` connection (server or client side)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def send(self, text: str) -> None:
        try:
            await self.connection.send(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> str | bytes:
        try:
            return await self.connection.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.connection.close(code, reason)

    def try_send(self, text: str) -> bool:
        return False  # websockets sends through its own coroutine


class RealtimeSocket:
    """The openai SDK's Realtime connection, used for raw text both ways.

    The SDK opens the socket (URL, auth, headers); the bridge's core already
    builds and parses the JSON, so frames go through ``send_raw`` and
    ``recv_bytes`` without a second round of (de)serialisation.
    """

    def __init__(self, connection: AsyncRealtimeConnection) -> None:
        self.connection = connection

    async def send(self, text: str) -> None:
        try:
            await self.connection.send_raw(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> str | bytes:
        try:
            return await self.connection.recv_bytes()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.connection.close(code=code, reason=reason)

    def try_send(self, text: str) -> bool:
        return False  # the SDK sends through its own coroutine
