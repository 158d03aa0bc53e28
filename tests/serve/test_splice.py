"""The splice legs' flow control and close handling, over fake transports."""

from __future__ import annotations

import asyncio
import socket

import pytest

from serve.splice import Leg, keep_alive, link


class FakeTransport(asyncio.Transport):
    """Records what a leg does to its socket."""

    def __init__(self, *, can_eof: bool = True, sock: socket.socket | None = None) -> None:
        super().__init__({"socket": sock})
        self.written: list[bytes] = []
        self.reading = True
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self._can_eof = can_eof

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed and not self.eof_written
        self.written.append(bytes(data))

    def can_write_eof(self) -> bool:
        return self._can_eof

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


def pair(*, can_eof: bool = True) -> tuple[Leg, FakeTransport, Leg, FakeTransport]:
    a, b = Leg(), Leg()
    ta, tb = FakeTransport(can_eof=can_eof), FakeTransport(can_eof=can_eof)
    a.connection_made(ta)
    b.connection_made(tb)
    link(a, b)
    return a, ta, b, tb


def test_bytes_cross_unchanged_and_are_counted() -> None:
    a, ta, b, tb = pair()
    a.data_received(b"one")
    a.data_received(b"two")
    b.data_received(b"back")
    assert tb.written == [b"one", b"two"]
    assert ta.written == [b"back"]
    assert (a.bytes_read, b.bytes_read) == (6, 4)


def test_a_full_write_buffer_pauses_the_other_socket_until_it_drains() -> None:
    a, ta, b, tb = pair()
    b.pause_writing()  # b's socket cannot take more: stop reading from a's
    assert not ta.reading and tb.reading and b.write_paused
    b.resume_writing()
    assert ta.reading and not b.write_paused
    a.pause_writing()
    assert not tb.reading and ta.reading


def test_half_close_passes_on_and_both_close_when_both_ended() -> None:
    a, ta, b, tb = pair()
    assert a.eof_received() is True  # keep a open to write what b still sends
    assert tb.eof_written and not tb.closed
    b.data_received(b"late reply")
    assert ta.written == [b"late reply"]
    assert b.eof_received() is False  # returning False closes b's own transport
    assert ta.closed


def test_eof_closes_the_peer_when_it_cannot_half_close() -> None:
    a, _, _b, tb = pair(can_eof=False)
    assert a.eof_received() is False
    assert tb.closed


def test_losing_a_socket_closes_or_aborts_the_other() -> None:
    a, _, _, tb = pair()
    a.connection_lost(None)
    assert tb.closed and not tb.aborted
    a, _, _, tb = pair()
    a.connection_lost(ConnectionResetError())
    assert tb.aborted


def test_nothing_is_written_to_a_closing_socket() -> None:
    a, _, b, tb = pair()
    tb.close()
    a.data_received(b"x")
    assert tb.written == []
    assert a.eof_received() is False
    b.pause_writing()  # pausing a closed peer is a no-op, not an error


def test_unlinked_leg_drops_data_and_closes_on_eof() -> None:
    leg = Leg()
    transport = FakeTransport()
    leg.connection_made(transport)
    leg.data_received(b"x")
    assert leg.eof_received() is False
    leg.connection_lost(None)
    assert leg.lost
    leg.abort()
    assert transport.aborted


def test_a_leg_connecting_after_its_peer_left_aborts_itself() -> None:
    front, upstream = Leg(), Leg()
    front.connection_made(FakeTransport())
    upstream.peer = front
    front.connection_lost(None)
    transport = FakeTransport()
    upstream.connection_made(transport)
    assert transport.aborted


class EndsAtPeerEof(Leg):
    """A leg whose own direction cannot go on once the peer's has ended."""

    def peer_ended(self) -> bool:
        assert self.transport is not None
        self.transport.close()
        return False


def test_a_leg_may_end_the_splice_at_its_peers_eof() -> None:
    a, b = Leg(), EndsAtPeerEof()
    ta, tb = FakeTransport(), FakeTransport()
    a.connection_made(ta)
    b.connection_made(tb)
    link(a, b)
    assert a.eof_received() is False  # a's socket closes too: nothing more to carry
    assert tb.closed and not tb.eof_written


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux's keepalive options")
def test_keep_alive_sets_the_probes_and_the_matching_user_timeout() -> None:
    with socket.socket() as sock:
        keep_alive(FakeTransport(sock=sock), idle_s=30, interval_s=10, count=6)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        tcp = socket.IPPROTO_TCP
        assert sock.getsockopt(tcp, socket.TCP_KEEPIDLE) == 30
        assert sock.getsockopt(tcp, socket.TCP_KEEPINTVL) == 10
        assert sock.getsockopt(tcp, socket.TCP_KEEPCNT) == 6
        assert sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == 90_000


def test_keep_alive_leaves_a_transport_without_a_tcp_socket_alone() -> None:
    keep_alive(FakeTransport(), idle_s=30, interval_s=10, count=6)
    with socket.socket(socket.AF_UNIX) as sock:
        keep_alive(FakeTransport(sock=sock), idle_s=30, interval_s=10, count=6)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
