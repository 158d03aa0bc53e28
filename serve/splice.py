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
sockets close. Losing either socket closes the other (flushing what is already
buffered) or aborts it if the loss was an error.
"""

from __future__ import annotations

import asyncio
from typing import cast

__all__ = ["Leg", "link"]


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
        peer = self.peer
        out = peer.transport if peer is not None else None
        if peer is None or out is None or out.is_closing():
            return False
        if peer.eof or not out.can_write_eof():
            # Both directions are done: closing flushes what is buffered first.
            out.close()
            return False
        out.write_eof()
        return True  # keep this socket open to write the peer's remaining bytes

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
