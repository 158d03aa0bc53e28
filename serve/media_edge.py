"""The media edge: one public TCP port in front of the Serve proxy and the call actors.

Theory of operation: every connection opens with an HTTP/1.1 request head. The
edge reads just that head (at most ``max_head_bytes``, within ``head_timeout_s``
of accepting, however slowly it trickles in), parses it with
``serve.http_head`` and lets ``serve.media_route.route_request`` decide:

- a WebSocket upgrade under ``media_prefix`` (Twilio's ``wss://HOST/media/{call_id}``)
  is resolved to the address of the actor that owns the call and spliced to it,
  the head forwarded unchanged but for appended ``X-Forwarded-*`` headers;
- anything else is spliced, head included, to ``default_upstream`` (Serve's proxy),
  asked to close the connection after its answer unless it is an upgrade;
- a media upgrade the edge cannot serve is answered 400/403/404/426/431/502 and
  closed: one that no actor could accept (no credential, a broken WebSocket
  handshake) is refused by the route alone, without a lookup;
- a media upgrade that finds ``max_lookups`` lookups already in flight is answered
  503 with ``Retry-After: 1``, without one: a flood of upgrades for made-up call
  ids costs at most that many concurrent calls to the resolver (in production, Ray
  calls to the one pool actor). A lookup holds its place until the resolver's call
  has ended, also one the edge stopped waiting for (timed out, its client gone): a
  Ray call runs on at the pool whether or not anyone waits; a spliced call holds none.

After the head the edge is a byte pipe (``serve.splice``): no per-frame work, no
Ray call, no WebSocket parsing. One connection only ever goes to one upstream, so a
request to Serve ends its connection (``Connection: close``): a tunnel that keeps its
connections to the edge open could otherwise send a media upgrade on one that Serve
holds. An upstream's EOF ends a connection: Serve answered and closed, or an actor
ended its call, and neither reads on after its own EOF. So the edge closes the client's
side too (lingering: EOF, then up to ``linger_s`` once the answer is out), and a client
that stays silent holds no socket; the client's own EOF is passed on as a half-close
(the upstream may still answer). Both sockets of a splice have TCP keepalive on, so a
peer that vanishes without a FIN (a phone dropping off the network) is found by the
kernel within ``KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT`` (90 s), at
no cost per frame.

Run it in any asyncio loop (a Ray actor's, a test's): no threads. The call
lookup is the ``CallResolver`` port; Ray's is plugged in at the composition root.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import socket
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from serve.http_head import RequestHeadError, find_head_end, parse_request_head
from serve.media_route import (
    Refuse,
    ToDefault,
    ToMedia,
    closing_head,
    forwarded_head,
    refusal_response,
)
from serve.media_route import route_request as _route_request
from serve.splice import Leg, keep_alive, link

__all__ = ["CallResolver", "EdgeStats", "MediaEdge", "settle_edge_process"]

logger = logging.getLogger(__name__)
# The edge shares its process's GIL with the Ray driver's threads: hand it over every
# millisecond (Python's default is 5 ms), so a frame does not wait that long behind them.
SWITCH_INTERVAL_S = 0.001
# TCP keepalive on every spliced socket: probe after 30 s of silence, every 10 s, drop
# after 6 unanswered (and data unacknowledged as long): a vanished peer goes in 90 s.
# A probe is sent only on a socket idle that long (never the caller's: Twilio sends
# audio every 20 ms). Linux allows up to 32767 s idle/interval and 127 probes.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_COUNT = 6


def settle_edge_process() -> None:
    """Once the process that relays every call's audio has started: no collection scans
    start-up's objects again (a full one over what Ray, Serve and the app made stalled
    the loop 0.2 s, a gap at the phone), and the GIL changes hands every millisecond."""
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)


Address = tuple[str, int]


class CallResolver(Protocol):
    """Finds the WebSocket address of the actor that owns a live call."""

    async def resolve(self, call_id: str) -> tuple[str, int] | None:
        """``(host, port)`` of the call's actor, or None if no such live call."""
        ...


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """A snapshot of the edge's counters; bytes include live connections."""

    connections_open: int
    connections_total: int
    media_total: int
    default_total: int
    bytes_from_clients: int
    bytes_to_clients: int
    refusals: Mapping[str, int]
    lookups_in_flight: int


class _Phase(enum.Enum):
    HEAD = "head"  # reading the request head
    ROUTING = "routing"  # head read, reading paused, resolving/connecting
    SPLICING = "splicing"  # linked to an upstream: a byte pipe
    LINGERING = "lingering"  # refused, or the upstream ended: discarding input, closing


class MediaEdge:
    """Accepts connections on one port and splices each to its upstream.

    Call ``await start(host, port)`` (port 0 picks one; read ``port``), and
    ``await stop()`` to close the listener and every connection.
    """

    def __init__(
        self,
        resolver: CallResolver,
        default_upstream: tuple[str, int],
        *,
        media_prefix: str = "/media/",
        head_timeout_s: float = 10.0,
        max_head_bytes: int = 16384,
        forwarded_proto: str = "http",
        resolve_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        linger_s: float = 2.0,
        max_lookups: int = 64,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        if not (media_prefix.startswith("/") and media_prefix.endswith("/")):
            raise ValueError("media_prefix must start and end with '/'")
        if max_lookups < 1:
            raise ValueError("max_lookups must be at least 1")
        self.resolver = resolver
        self.default_upstream = default_upstream
        self.media_prefix = media_prefix
        self.head_timeout_s = head_timeout_s
        self.max_head_bytes = max_head_bytes
        # What the edge's clients used to reach it; the tunnel in front usually
        # sets X-Forwarded-Proto itself, and then this is not used.
        self.forwarded_proto = forwarded_proto
        self.resolve_timeout_s = resolve_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.linger_s = linger_s
        # Calls being set up at once, not calls: a lookup takes milliseconds, so 64
        # covers any real burst of streams while bounding what a flood can ask of Ray.
        self.max_lookups = max_lookups
        self._lookups = 0
        self._server: asyncio.Server | None = None
        self._open: set[_Front] = set()
        self._tasks: set[asyncio.Task[object]] = set()  # routing and lookups
        self._counts: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()
        self._on_refused = on_refused  # each refusal's reason, as it happens (a metric)
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on (host, port), or on ``sock``, a listening socket bound earlier."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(lambda: _Front(self), sock=sock)
        else:
            self._server = await loop.create_server(lambda: _Front(self), host, port)

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("MediaEdge.start() has not been awaited")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for front in list(self._open):
            front.abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Aborted sockets report connection_lost on a later loop iteration.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)
        await self._server.wait_closed()
        self._server = None

    def stats(self) -> EdgeStats:
        live_in = sum(front.bytes_read for front in self._open)
        live_out = sum(front.peer.bytes_read for front in self._open if front.peer is not None)
        return EdgeStats(
            connections_open=len(self._open),
            connections_total=self._counts["total"],
            media_total=self._counts["media"],
            default_total=self._counts["default"],
            bytes_from_clients=self._counts["bytes_in"] + live_in,
            bytes_to_clients=self._counts["bytes_out"] + live_out,
            refusals=MappingProxyType(dict(self._refusals)),
            lookups_in_flight=self._lookups,
        )

    # -- called by _Front ----------------------------------------------------

    def _refused(self, reason: str) -> None:
        self._refusals[reason] += 1
        if self._on_refused is not None:
            try:
                self._on_refused(reason)
            except Exception:  # a metric that failed must not take the connection's answer
                logger.exception("edge: counting a refusal (%s) failed", reason)

    def _take_lookup(self) -> bool:
        """A place for one lookup, or False when all ``max_lookups`` are taken."""
        if self._lookups >= self.max_lookups:
            return False
        self._lookups += 1
        return True

    def _release_lookup(self) -> None:
        self._lookups -= 1

    def _lookup(self, call_id: str) -> asyncio.Task[Address | None]:
        """Ask the resolver in a task of its own, which holds its lookup place (taken by
        ``_take_lookup``) until it ends. A Ray call the edge stopped waiting for still
        runs at the pool: its place is freed when it has, so ``max_lookups`` bounds those
        calls, not just the ones waited for."""
        task = asyncio.get_running_loop().create_task(self.resolver.resolve(call_id))
        self._tasks.add(task)
        task.add_done_callback(self._lookup_done)
        return task

    def _lookup_done(self, task: asyncio.Task[Address | None]) -> None:
        self._tasks.discard(task)
        self._release_lookup()
        if not task.cancelled():
            task.exception()  # retrieved here: its front logged it, or had given up on it

    def _opened(self, front: _Front) -> None:
        self._open.add(front)
        self._idle.clear()
        self._counts["total"] += 1

    def _closed(self, front: _Front) -> None:
        self._open.discard(front)
        if not self._open:
            self._idle.set()
        self._counts["bytes_in"] += front.bytes_read
        if front.peer is not None:
            self._counts["bytes_out"] += front.peer.bytes_read

    def _spawn(self, coro: Coroutine[None, None, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class _Front(Leg):
    """The client's socket: reads the head, routes, then becomes a splice leg."""

    def __init__(self, edge: MediaEdge) -> None:
        super().__init__()
        self._edge = edge
        self._phase = _Phase.HEAD
        self._buffer = bytearray()
        self._scanned = 0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._client_ip: str | None = None
        self._upstream: Leg | None = None  # set while connecting, before link()
        self._call_id: str | None = None  # set once spliced to a call's actor
        self._looking_up = False  # holds one of the edge's lookup places
        self._spliced_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        self._client_ip = str(peername[0]) if isinstance(peername, tuple) else None
        self._edge._opened(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._edge.head_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._phase is _Phase.SPLICING:
            super().data_received(data)
            return
        self.bytes_read += len(data)
        if self._phase is _Phase.LINGERING:
            return
        self._buffer += data  # in ROUTING: bytes read before the pause took hold
        if self._phase is _Phase.HEAD:
            self._scan_head()

    def eof_received(self) -> bool:
        if self._phase is _Phase.SPLICING:
            return super().eof_received()
        self.eof = True
        # Routing: remember the half-close and pass it on once spliced.
        return self._phase is _Phase.ROUTING

    def peer_ended(self) -> bool:
        if self.eof or self._phase is not _Phase.SPLICING:
            return super().peer_ended()
        # The upstream is done: Serve answered and closed (as asked, or refusing an
        # upgrade), an actor ended its call. None of them half-closes to go on reading,
        # so the connection is over whatever the client still sends, or keeps back:
        # this socket lingers on its own, the upstream's closes now.
        assert self.peer is not None
        self.peer.peer = None
        self._linger()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
        # A task cancelled before its first step never runs its finally: free it here.
        self._end_lookup()
        if self._upstream is not None and self.peer is None:
            self._upstream.abort()
        if self._call_id is not None:
            logger.info(
                "edge: call %s closed after %.1f s, %d bytes in, %d out",
                self._call_id,
                asyncio.get_running_loop().time() - self._spliced_at,
                self.bytes_read,
                self.peer.bytes_read if self.peer is not None else 0,
            )
        self._edge._closed(self)
        super().connection_lost(exc)

    def abort_all(self) -> None:
        """Drop this connection and its upstream (or the one being connected)."""
        for leg in (self.peer, self._upstream):
            if leg is not None:
                leg.abort()
        self.abort()

    # -- head ------------------------------------------------------------------

    def _scan_head(self) -> None:
        limit = self._edge.max_head_bytes
        end = find_head_end(self._buffer, self._scanned)
        if end is None:
            if len(self._buffer) > limit:
                self._refuse(Refuse(431, "head_too_large"))
                return
            self._scanned = max(0, len(self._buffer) - 3)
            return
        if end > limit:
            self._refuse(Refuse(431, "head_too_large"))
            return
        raw = bytes(self._buffer[:end])
        del self._buffer[:end]
        try:
            head = parse_request_head(raw)
        except RequestHeadError as exc:
            logger.debug("edge: bad request head (%s)", exc.reason)
            self._refuse(Refuse(400, "bad_head"))
            return
        self._cancel_timer()
        match _route_request(head, self._edge.media_prefix):
            case Refuse() as refusal:
                self._refuse(refusal)
            case ToDefault():
                self._edge._counts["default"] += 1
                data = closing_head(raw, head)
                self._begin_routing(self._splice_to(self._edge.default_upstream, data, None))
            case ToMedia(call_id=call_id):
                if not self._edge._take_lookup():
                    # No call id logged: a flood would be a log line per request.
                    self._refuse(Refuse(503, "busy"))
                    return
                self._looking_up = True
                self._edge._counts["media"] += 1
                data = forwarded_head(
                    raw, head, client_ip=self._client_ip, proto=self._edge.forwarded_proto
                )
                self._begin_routing(self._to_media(call_id, data))

    def _head_timed_out(self) -> None:
        self._timer = None
        self._edge._refused("head_timeout")
        self.abort()

    # -- routing ---------------------------------------------------------------

    def _begin_routing(self, coro: Coroutine[None, None, None]) -> None:
        self._phase = _Phase.ROUTING
        assert self.transport is not None
        self.transport.pause_reading()
        self._task = self._edge._spawn(coro)

    async def _to_media(self, call_id: str, head: bytes) -> None:
        edge = self._edge
        lookup = edge._lookup(call_id)
        # The place is the lookup's from here: freed as it ends (before this front can
        # answer: a client told 404 may ask again at once), or later if given up on.
        self._looking_up = False
        try:
            # Shielded: a timeout or a client gone stops the waiting, not the lookup.
            address = await asyncio.wait_for(asyncio.shield(lookup), edge.resolve_timeout_s)
        except TimeoutError:
            self._refuse(Refuse(502, "resolver_timeout"), call_id)
            return
        except Exception as exc:  # the resolver is a plug-in: any failure is a 502
            logger.warning("edge: resolver failed for call %s: %s", call_id, type(exc).__name__)
            self._refuse(Refuse(502, "resolver_error"), call_id)
            return
        if address is None:
            self._refuse(Refuse(404, "unknown_call"), call_id)
            return
        await self._splice_to(address, head, call_id)

    async def _splice_to(self, address: tuple[str, int], head: bytes, call_id: str | None) -> None:
        upstream = self._upstream = Leg()
        upstream.peer = self  # upstream bytes may arrive before link() below
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: upstream, address[0], address[1]),
                self._edge.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            reason = "upstream_unreachable" if call_id else "default_unreachable"
            logger.warning("edge: cannot reach %s (%s)", call_id or "default", type(exc).__name__)
            self._refuse(Refuse(502, reason), call_id)
            return
        assert upstream.transport is not None and self.transport is not None
        if upstream.lost or self.transport.is_closing():
            # The upstream hung up before it got the head: nothing to splice.
            upstream.abort()
            self.abort()
            return
        link(self, upstream)
        self._phase = _Phase.SPLICING
        self._task = None
        for transport in (self.transport, upstream.transport):
            try:
                keep_alive(transport, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
            except OSError as exc:  # the splice works without; only a vanished peer lingers
                logger.warning("edge: cannot set TCP keepalive (%s)", exc)
        upstream.transport.write(head + bytes(self._buffer))
        self._buffer.clear()
        if call_id is not None:
            self._call_id, self._spliced_at = call_id, loop.time()
            logger.info("edge: call %s spliced to its actor", call_id)
        if self.eof:
            upstream.transport.write_eof()
        elif not upstream.write_paused:
            self.transport.resume_reading()

    def _end_lookup(self) -> None:
        if self._looking_up:
            self._looking_up = False
            self._edge._release_lookup()

    def _refuse(self, refusal: Refuse, call_id: str | None = None) -> None:
        self._cancel_timer()
        self._edge._refused(refusal.reason)
        if call_id is not None:
            logger.info("edge: call %s refused %d (%s)", call_id, refusal.status, refusal.reason)
        self._task = None
        self._buffer.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(refusal_response(refusal.status))
        self._linger()

    def _linger(self) -> None:
        """Close after an answer. Lingering: a client still sending would get a RST that
        destroys the answer if we closed now, so signal EOF and drain until it goes, or
        ``linger_s`` after the answer has left (however slowly the client reads it)."""
        self._phase = _Phase.LINGERING
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.eof or not transport.can_write_eof():
            transport.close()  # flushes first
            return
        transport.write_eof()  # sent once what is buffered has been
        transport.resume_reading()
        self._linger_on()

    def _linger_on(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._edge.linger_s, self._lingered)

    def _lingered(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            self._linger_on()  # the answer is still going out: wait for it
            return
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
