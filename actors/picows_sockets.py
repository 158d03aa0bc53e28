"""The shell's ``TextSocket`` over picows, and the call actor's media server.

picows parses frames in Cython and writes each frame with one ``send``
syscall while the kernel has room; ``websockets`` runs a generator-driven
parser and a message assembler in Python. On this machine that is ~10 us of
CPU per message instead of ~25 (the openai SDK's connection: ~32), on top of
what the shell's tasks cost anyway (``bench/socket_cost.py``). ``PicowsSocket``
is the listener picows calls back, turned into ``send`` / ``recv`` / ``close``:

- messages: text frames are decoded (UTF-8, else close 1007), fragments are
  joined, a message over ``max_message`` closes with 1009, pings are answered
  by picows itself;
- backpressure: ``send`` waits while the transport's write buffer is above
  ``WRITE_HIGH_WATER`` (``pause_writing`` until ``resume_writing``);
- closing (RFC 6455 §7): a peer's close frame is answered with the same code
  and the TCP connection dropped; ``close`` sends ours, waits up to
  ``CLOSE_TIMEOUT_S`` for the answer, then aborts; data arriving after our
  close frame went out is dropped. ``recv`` returns what was queued, then
  raises ``SocketClosed`` with the peer's code and reason (ours if the peer
  never sent one, 1006 if the connection was lost);
- keepalive: after ``KEEPALIVE_S`` without incoming data picows pings, and
  closes (1001) when no pong comes within ``KEEPALIVE_S`` more.

``serve_media`` is the per-call server: ``check(path, headers)`` sees each
upgrade request first and may refuse it with an HTTP status; accepted sockets
go to ``on_socket``, and are closed (1000) when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import TypedDict

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from switchboard.errors import SocketClosed

__all__ = [
    "CLOSE_TIMEOUT_S",
    "KEEPALIVE_S",
    "MAX_MESSAGE",
    "WRITE_HIGH_WATER",
    "Check",
    "MediaServer",
    "PicowsSocket",
    "keepalive",
    "serve_media",
]

log = logging.getLogger(__name__)

MAX_MESSAGE = 2**20
CLOSE_TIMEOUT_S = 5.0
# websockets' default keepalive: a peer that vanished without a FIN is noticed.
# picows pings only after this long without incoming data, so a live call never pays.
KEEPALIVE_S = 20.0
WRITE_HIGH_WATER = 64 * 1024
WRITE_LOW_WATER = 16 * 1024
NO_STATUS = 1005  # the close frame carried no code
CONNECTION_LOST = 1006  # no close frame at all
_MAX_REASON_BYTES = 123  # a control frame's payload is at most 125 bytes, 2 of them the code


def _sendable(code: int) -> bool:
    """Codes an endpoint may put in a close frame (RFC 6455 §7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _reason_bytes(reason: str) -> bytes:
    return reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore").encode()


class PicowsSocket(WSListener):
    """One WebSocket connection, client or server side, as a ``TextSocket``.

    picows creates it (through a factory) and calls its ``on_ws_*`` methods;
    application code uses ``send``, ``recv``, ``close`` and ``wait_closed``.
    Use it from the event loop thread that accepted or opened it.
    """

    def __init__(
        self,
        max_message: int = MAX_MESSAGE,
        opened: Callable[[PicowsSocket], None] | None = None,
    ) -> None:
        super().__init__()
        self.max_message = max_message
        self.transport: WSTransport | None = None
        self._opened = opened
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[str | bytes] = deque()
        self._reader: asyncio.Future[None] | None = None
        self._paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._parts: list[bytes] = []
        self._parts_type: WSMsgType | None = None
        self._parts_size = 0
        self._closed: SocketClosed | None = None

    # -- the TextSocket --------------------------------------------------

    async def send(self, text: str) -> None:
        """Send one text message; waits while the peer is not keeping up."""
        while self._paused and self._closed is None:
            await self._writable.wait()
        transport = self._transport()
        if self._closed is not None or transport.is_close_frame_sent:
            raise self._closing_error()
        transport.send(WSMsgType.TEXT, text)

    def try_send(self, text: str) -> bool:
        """Send now unless writing is paused or the socket is closing (then ``send``)."""
        transport = self.transport
        if self._paused or self._closed is not None or transport is None:
            return False
        if transport.is_close_frame_sent:
            return False
        transport.send(WSMsgType.TEXT, text)
        return True

    async def recv(self) -> str | bytes:
        """The next message; ``SocketClosed`` once the queue is empty and the socket closed."""
        while not self._inbox:
            closed = self._closed
            if closed is not None:
                raise SocketClosed(closed.code, closed.reason)
            if self._reader is not None:
                raise RuntimeError("another task is already waiting in recv()")
            assert self._loop is not None, "recv() before the connection opened"
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._inbox.popleft()

    async def close(
        self, code: int = 1000, reason: str = "", *, timeout_s: float | None = None
    ) -> None:
        """Send a close frame (unless one was sent), wait up to ``timeout_s`` (default
        ``CLOSE_TIMEOUT_S``) for the answer and the disconnect, then drop the connection
        (0: at once, for a peer given up on). Cancelled while waiting, it drops it too."""
        if not _sendable(code):
            raise ValueError(f"{code} cannot be sent in a close frame")
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(code), _reason_bytes(reason))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S if timeout_s is None else timeout_s):
                await self.wait_closed()
        except TimeoutError:  # the peer never answered: drop the connection
            transport.disconnect(graceful=False)
            await self.wait_closed()
        except asyncio.CancelledError:  # whoever waited gave up: nor is it left open
            transport.disconnect(graceful=False)
            raise

    # -- more than a TextSocket ------------------------------------------

    async def wait_closed(self) -> None:
        """Return once the TCP connection is gone."""
        with contextlib.suppress(Exception):  # a client's local failure is re-raised here
            await self._transport().wait_disconnected()

    @property
    def path(self) -> str:
        """The upgrade request's target, query string included (server side)."""
        return self._transport().request.path.decode("ascii", "surrogateescape")

    @property
    def headers(self) -> Mapping[str, str]:
        """The upgrade request's headers (server side), case-insensitive."""
        return self._transport().request.headers

    @property
    def writing_paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> SocketClosed | None:
        """How the socket ended (what ``recv`` will raise), or None while it is open."""
        return self._closed

    # -- picows callbacks ------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        transport.underlying_transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        if self._opened is not None:
            self._opened(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # Raising WSProtocolError makes picows send that close code and disconnect.
        kind = frame.msg_type
        if kind != WSMsgType.CLOSE and transport.is_close_frame_sent:
            # We are closing. After its own protocol errors picows may still hand
            # over the rest of the offending frame: drop it with the rest.
            return
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            if self._parts_type is not None:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "expected a continuation frame")
            if frame.fin:
                self._deliver(
                    _text(frame) if kind == WSMsgType.TEXT else frame.get_payload_as_bytes()
                )
            else:
                self._parts_type = kind
                self._add_part(frame)
        elif kind == WSMsgType.CONTINUATION:
            if self._parts_type is None:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
            self._add_part(frame)
            if frame.fin:
                self._deliver(self._joined())
        elif kind == WSMsgType.CLOSE:
            code = frame.get_close_code().value or NO_STATUS
            if not transport.is_close_frame_sent:  # the peer closes first: answer in kind
                transport.send_close(WSCloseCode(code if _sendable(code) else 1000))
            self._finish(SocketClosed(code, frame.get_close_reason() or ""))
            transport.disconnect()
        # PING is answered by picows (enable_auto_pong); a PONG needs nothing.

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._closed is None:
            handshake = transport.close_handshake
            info = None if handshake is None else (handshake.recv or handshake.sent)
            if info is None:
                self._finish(SocketClosed(CONNECTION_LOST, "connection lost"))
            else:
                self._finish(SocketClosed(info.code.value or NO_STATUS, info.reason or ""))
        self._writable.set()  # senders wake up to see the close

    def pause_writing(self) -> None:
        self._paused = True
        self._writable.clear()

    def resume_writing(self) -> None:
        self._paused = False
        self._writable.set()

    # -- helpers ---------------------------------------------------------

    def _transport(self) -> WSTransport:
        if self.transport is None:
            raise RuntimeError("the WebSocket is not connected yet")
        return self.transport

    def _deliver(self, message: str | bytes) -> None:
        self._inbox.append(message)
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    def _finish(self, closed: SocketClosed) -> None:
        self._closed = closed
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)
        self._writable.set()

    def _closing_error(self) -> SocketClosed:
        if self._closed is not None:
            return SocketClosed(self._closed.code, self._closed.reason)
        handshake = self._transport().close_handshake
        sent = None if handshake is None else handshake.sent
        if sent is None:
            return SocketClosed(CONNECTION_LOST, "connection lost")
        return SocketClosed(sent.code.value, sent.reason or "")

    def _add_part(self, frame: WSFrame) -> None:
        self._parts_size += frame.payload_size
        if self._parts_size > self.max_message:
            raise WSProtocolError(
                WSCloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes"
            )
        self._parts.append(frame.get_payload_as_bytes())

    def _joined(self) -> str | bytes:
        data = b"".join(self._parts)
        kind = self._parts_type
        self._parts, self._parts_type, self._parts_size = [], None, 0
        if kind != WSMsgType.TEXT:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise WSProtocolError(
                WSCloseCode.INVALID_TEXT, "invalid UTF-8 in a text message"
            ) from None


def _text(frame: WSFrame) -> str:
    try:
        return frame.get_payload_as_utf8_text()
    except UnicodeDecodeError:
        raise WSProtocolError(WSCloseCode.INVALID_TEXT, "invalid UTF-8 in a text message") from None


# -- the media server -------------------------------------------------------

# None or a dict of response headers to accept (a chosen Sec-WebSocket-Protocol, say);
# (status, body) to refuse.
Check = Callable[[str, Mapping[str, str]], tuple[int, str] | dict[str, str] | None]
OnSocket = Callable[[PicowsSocket], Awaitable[None]]


class MediaServer:
    """A listening picows server and the sockets it accepted."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.sockets: set[PicowsSocket] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): with port 0, the one the kernel picked."""
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def close(self, code: int = 1001, reason: str = "server closing") -> None:
        """Stop listening and start closing every live socket (``wait_closed`` to finish)."""
        self.server.close()
        for socket in list(self.sockets):
            self._spawn(socket.close(code, reason))

    async def wait_closed(self) -> None:
        """Wait for the listener and every handler and close started so far."""
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)


async def serve_media(
    host: str,
    port: int,
    check: Check,
    on_socket: OnSocket,
    *,
    max_message: int = MAX_MESSAGE,
    keepalive_s: float | None = KEEPALIVE_S,
    use_aiofastnet: bool = False,
) -> MediaServer:
    """Listen on (host, port); ``MediaServer.address`` tells the port when 0 was given.

    ``check(path, headers)`` runs on each upgrade request before it is accepted:
    ``path`` is the request target as sent (``/media/CA...?x=1``, query string
    included, not percent-decoded), ``headers`` a case-insensitive mapping. It
    returns None to accept, a dict of headers to accept with, or ``(status, body)``
    with a status of 400 or more to refuse. ``on_socket(socket)`` runs as a task
    per accepted connection. After ``keepalive_s`` without data a socket is
    pinged; with no pong within ``keepalive_s`` more it is closed (1001) and
    ``recv`` raises.

    The sockets use the event loop's own transports (uvloop's in a Ray actor):
    picows would default to aiofastnet's, which measured no cheaper here
    (bench/socket_cost.py) and is the younger code, with a TLS engine of its own.
    """
    media: MediaServer

    def opened(socket: PicowsSocket) -> None:
        media.sockets.add(socket)
        media._spawn(_handle(media, socket, on_socket))

    def route(request: WSUpgradeRequest) -> PicowsSocket | WSUpgradeResponseWithListener:
        path = request.path.decode("ascii", "surrogateescape")
        try:
            refusal = check(path, request.headers)
        except Exception:  # never answer with the exception's text
            log.exception("media handshake check failed")
            refusal = (HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n")
        if refusal is None:
            return PicowsSocket(max_message, opened)
        if isinstance(refusal, dict):
            accepted = WSUpgradeResponse.create_101_response(extra_headers=refusal)
            return WSUpgradeResponseWithListener(accepted, PicowsSocket(max_message, opened))
        status, body = refusal
        if status < 400:
            log.error("media handshake check answered %s; refusing with 500", status)
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, "internal error\n"
        response = WSUpgradeResponse.create_error_response(
            status, body.encode(), extra_headers={"Content-Type": "text/plain; charset=utf-8"}
        )
        return WSUpgradeResponseWithListener(response, None)

    server = await ws_create_server(
        route,
        host,
        port,
        max_frame_size=max_message,
        logger_name="media",
        use_aiofastnet=use_aiofastnet,
        **keepalive(keepalive_s),
    )
    media = MediaServer(server)
    return media


class Keepalive(TypedDict):
    enable_auto_ping: bool
    auto_ping_idle_timeout: float
    auto_ping_reply_timeout: float


def keepalive(seconds: float | None) -> Keepalive:
    """picows's arguments to ping after ``seconds`` idle (its default strategy),
    and give up ``seconds`` later; None: never ping."""
    return Keepalive(
        enable_auto_ping=seconds is not None,
        auto_ping_idle_timeout=seconds or KEEPALIVE_S,
        auto_ping_reply_timeout=seconds or KEEPALIVE_S,
    )


async def _handle(media: MediaServer, socket: PicowsSocket, on_socket: OnSocket) -> None:
    try:
        await on_socket(socket)
    except Exception:
        log.exception("media socket handler failed")
        await socket.close(1011, "internal error")
    else:
        await socket.close()
    finally:
        media.sockets.discard(socket)
