"""Byte-for-byte splicing of two TCP connections with asyncio protocols.

Theory of operation: a splice is two ``Leg`` protocols, one per socket, linked
with ``link``. What a leg reads it writes to its peer's transport unchanged, in
the ``data_received`` callback itself: no queue, no task, no copy.

Backpressure rides asyncio's flow control. When a leg's transport buffers more
than its high-water mark (the peer reads slower than we receive), asyncio calls
that leg's ``pause_writing``, which pauses reading on the *other* socket; the
kernel's receive window then pushes back on the sender. ``resume_writing``
undoes it. So each direction holds at most about one high-water mark in memory.

Half-close: an EOF on one side becomes ``write_eof`` on the other and the leg
stays open to carry the other direction; once both directions have ended both
sockets close. A leg that knows its direction cannot go on after the other's EOF
overrides ``peer_ended`` (the media edge's front: no upstream of its reads on).
Losing either socket closes the other (flushing what is already buffered) or aborts
it if the loss was an error.

Nothing here times anything: a peer that vanishes without a FIN or RST is found by
TCP keepalive (``keep_alive``), set on both sockets, in the kernel, at no cost per
chunk.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

__all__ = ["Leg", "keep_alive", "link"]


class Leg(asyncio.Protocol):
    """One socket of a splice. ``bytes_read`` counts what arrived on this socket."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Leg | None = None
        self.eof = False
        self.lost = False
        self.write_paused = False
        self.bytes_read = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.peer is not None and self.peer.lost:
            # The other side went away while this one was still connecting.
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        # The hot path: one call per chunk read from the socket.
        self.bytes_read += len(data)
        out = self.peer.transport if self.peer is not None else None
        if out is not None and not out.is_closing():
            out.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        # True keeps this socket open to write the peer's remaining bytes.
        return self.peer is not None and self.peer.peer_ended()

    def peer_ended(self) -> bool:
        """The peer's socket sent EOF: pass it on to this one. True while this socket
        may still send, so the peer's must stay open to carry it."""
        out = self.transport
        if out is None or out.is_closing():
            return False
        if self.eof or not out.can_write_eof():
            # Both directions are done: closing flushes what is buffered first.
            out.close()
            return False
        out.write_eof()
        return True

    def pause_writing(self) -> None:
        self.write_paused = True
        _set_reading(self.peer, False)

    def resume_writing(self) -> None:
        self.write_paused = False
        _set_reading(self.peer, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        peer = self.peer
        out = peer.transport if peer is not None else None
        if out is None or out.is_closing():
            return
        if exc is None:
            out.close()
        else:
            out.abort()

    def abort(self) -> None:
        """Close this socket now, dropping anything still buffered."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


def link(a: Leg, b: Leg) -> None:
    """Make ``a`` and ``b`` forward to each other from now on."""
    a.peer, b.peer = b, a


def _set_reading(leg: Leg | None, reading: bool) -> None:
    transport = leg.transport if leg is not None else None
    if transport is None or transport.is_closing():
        return
    if reading:
        transport.resume_reading()
    else:
        transport.pause_reading()


def keep_alive(transport: asyncio.BaseTransport, idle_s: int, interval_s: int, count: int) -> None:
    """Have the kernel probe an idle connection after ``idle_s`` and drop it after
    ``count`` unanswered probes ``interval_s`` apart, or once data it sent has gone
    unacknowledged that long (``TCP_USER_TIMEOUT``: keepalive probes only an idle
    socket, and a peer gone mid-send would otherwise be retried ~15 minutes). Options
    a platform lacks are skipped (macOS has no ``TCP_USER_TIMEOUT``)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = {
        "TCP_KEEPIDLE": idle_s,
        "TCP_KEEPINTVL": interval_s,
        "TCP_KEEPCNT": count,
        "TCP_USER_TIMEOUT": (idle_s + interval_s * count) * 1000,  # milliseconds
    }
    for name, value in options.items():
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
