"""The media edge on real loopback sockets: a websockets server stands in for a
call's actor, a small keep-alive HTTP server for the Serve proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from serve.media_edge import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_S,
    KEEPALIVE_INTERVAL_S,
    CallResolver,
    MediaEdge,
    _Front,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

Address = tuple[str, int]
EdgeFactory = Callable[..., Awaitable[MediaEdge]]
CALL = "CA0123456789abcdef0123456789abcdef"
UPGRADE = (
    f"GET /media/{CALL} HTTP/1.1\r\n"
    "host:   calls.example.com \r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "X-Twilio-Signature: +9vaX1RSN4cZfgud/T6W/NCbhLo=\r\n"
    "\r\n"
).encode()
# What Twilio sends on every stream (protocols.md 1.6); the edge only looks for it.
SIGNED = {"X-Twilio-Signature": "+9vaX1RSN4cZfgud/T6W/NCbhLo="}
FORWARDED = (
    b"X-Forwarded-For: 127.0.0.1\r\n"
    b"X-Forwarded-Proto: https\r\n"
    b"X-Forwarded-Host: calls.example.com\r\n"
)


class Resolver:
    """A static table; records what it was asked."""

    def __init__(self, table: dict[str, Address] | None = None) -> None:
        self.table = table or {}
        self.asked: list[str] = []

    async def resolve(self, call_id: str) -> Address | None:
        self.asked.append(call_id)
        return self.table.get(call_id)


class BrokenResolver:
    async def resolve(self, call_id: str) -> Address | None:
        raise RuntimeError("actor registry unavailable")


class HangingResolver:
    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def resolve(self, call_id: str) -> Address | None:
        self.asked.set()
        await asyncio.Event().wait()
        return None


class HeldResolver:
    """Counts its lookups and holds each one until the test answers it."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.held: asyncio.Queue[asyncio.Future[Address | None]] = asyncio.Queue()

    async def resolve(self, call_id: str) -> Address | None:
        self.asked.append(call_id)
        answer: asyncio.Future[Address | None] = asyncio.get_running_loop().create_future()
        await self.held.put(answer)
        return await answer

    async def next(self) -> asyncio.Future[Address | None]:
        """The next lookup to arrive, still held."""
        return await asyncio.wait_for(self.held.get(), 5)


class Recorder:
    """A raw TCP upstream; the test drives each accepted connection by hand."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.writers: list[asyncio.StreamWriter] = []
        self.address: Address = ("127.0.0.1", 0)

    async def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.accepted.put((reader, writer))

    async def next(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(self.accepted.get(), 5)


class Actor:
    """A websockets server standing in for a call's actor: greets, echoes, bursts."""

    def __init__(self) -> None:
        self.requests: list[ServerConnection] = []
        self.server: Server | None = None

    async def handler(self, ws: ServerConnection) -> None:
        self.requests.append(ws)
        await ws.send("hello from actor")
        async for message in ws:
            if isinstance(message, str) and message.startswith("burst "):
                for i in range(int(message.split()[1])):
                    await ws.send(f"pushed {i}")
            else:
                await ws.send(message)

    @property
    def address(self) -> Address:
        assert self.server is not None
        return ("127.0.0.1", next(iter(self.server.sockets)).getsockname()[1])


async def http_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.1 server answering each request with what it saw; keep-alive unless
    the request says ``Connection: close`` (then it says so too and closes, as uvicorn)."""
    conn = id(writer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            closing = headers.get("connection") == "close"
            payload = json.dumps(
                {
                    "method": method,
                    "target": target,
                    "body_len": len(body),
                    "conn": conn,
                    "connection": [line for line in lines if line.lower().startswith("conn")],
                }
            ).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + (b"Connection: close\r\n" if closing else b"")
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            if closing:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def closed_port() -> Address:
    """An address nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return ("127.0.0.1", sock.getsockname()[1])


@pytest_asyncio.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    server = await asyncio.start_server(rec.on_client, "127.0.0.1", 0)
    rec.address = ("127.0.0.1", next(iter(server.sockets)).getsockname()[1])
    yield rec
    for writer in rec.writers:
        writer.close()
    server.close()


@pytest_asyncio.fixture
async def actor() -> AsyncIterator[Actor]:
    stand_in = Actor()
    async with serve(stand_in.handler, "127.0.0.1", 0, max_size=None) as server:
        stand_in.server = server
        yield stand_in


@pytest_asyncio.fixture
async def serve_proxy() -> AsyncIterator[Address]:
    server = await asyncio.start_server(http_upstream, "127.0.0.1", 0)
    yield ("127.0.0.1", server.sockets[0].getsockname()[1])
    server.close()


@pytest_asyncio.fixture
async def make_edge() -> AsyncIterator[EdgeFactory]:
    """Builds and starts edges on 127.0.0.1, and stops them after the test."""
    started: list[MediaEdge] = []

    async def build(resolver: CallResolver, default: Address | None = None, **kw: Any) -> MediaEdge:
        edge = MediaEdge(resolver, default or closed_port(), **kw)
        await edge.start("127.0.0.1", 0)
        started.append(edge)
        return edge

    yield build
    for edge in started:
        await edge.stop()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` raw and read everything the edge answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


# -- media path ----------------------------------------------------------------


async def test_websocket_through_the_edge_reaches_the_actor_both_ways(
    make_edge: EdgeFactory, actor: Actor
) -> None:
    resolver = Resolver({CALL: actor.address})
    edge = await make_edge(resolver, forwarded_proto="https")
    url = f"ws://127.0.0.1:{edge.port}/media/{CALL}"
    headers = {"X-Twilio-Signature": "+9vaX1RSN4cZfgud/T6W/NCbhLo="}
    async with connect(url, additional_headers=headers, compression=None) as ws:
        assert await ws.recv() == "hello from actor"
        live = edge.stats()
        assert (live.connections_open, live.media_total) == (1, 1)
        for i in range(300):
            await ws.send(f"caller {i}")
        await ws.send("burst 300")
        assert [await ws.recv() for _ in range(300)] == [f"caller {i}" for i in range(300)]
        assert [await ws.recv() for _ in range(300)] == [f"pushed {i}" for i in range(300)]

    request = actor.requests[0].request
    assert request is not None
    assert request.path == f"/media/{CALL}"
    assert request.headers["Host"] == f"127.0.0.1:{edge.port}"
    assert request.headers["X-Twilio-Signature"] == headers["X-Twilio-Signature"]
    assert request.headers["X-Forwarded-For"] == "127.0.0.1"
    assert request.headers["X-Forwarded-Proto"] == "https"
    assert request.headers["X-Forwarded-Host"] == f"127.0.0.1:{edge.port}"
    assert resolver.asked == [CALL]
    stats = edge.stats()
    assert stats.bytes_from_clients > 300 * len("caller 0")
    assert stats.bytes_to_clients > 600 * len("pushed 0")


async def test_large_and_many_small_frames_keep_their_order(
    make_edge: EdgeFactory, actor: Actor
) -> None:
    edge = await make_edge(Resolver({CALL: actor.address}))
    big = [os.urandom(1 << 20) for _ in range(4)]
    small = [f'{{"event":"media","seq":{i},"payload":"{"A" * 216}"}}' for i in range(2000)]
    url = f"ws://127.0.0.1:{edge.port}/media/{CALL}"
    async with connect(url, max_size=None, additional_headers=SIGNED) as ws:
        assert await ws.recv() == "hello from actor"

        async def send_all() -> None:
            for frame in big:
                await ws.send(frame)
            for message in small:
                await ws.send(message)

        sender = asyncio.create_task(send_all())
        assert [await ws.recv() for _ in big] == big
        assert [await ws.recv() for _ in small] == small
        await sender
    assert edge.stats().bytes_from_clients > 4 * (1 << 20)


async def test_the_actor_gets_the_exact_head_plus_forwarded_headers(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}), forwarded_proto="https")
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE + b"early")
    up_reader, up_writer = await recorder.next()
    expected = UPGRADE[:-2] + FORWARDED + b"\r\n" + b"early"
    assert await up_reader.readexactly(len(expected)) == expected

    answer = b"HTTP/1.1 101 Switching Protocols\r\n\r\nfrom actor"
    up_writer.write(answer)
    assert await reader.readexactly(len(answer)) == answer
    writer.write(b"from caller")
    assert await up_reader.readexactly(11) == b"from caller"

    # Half-close: the caller stops sending, the actor can still answer.
    writer.write_eof()
    assert await up_reader.read() == b""
    up_writer.write(b"goodbye")
    await up_writer.drain()
    assert await reader.readexactly(7) == b"goodbye"
    up_writer.close()
    assert await reader.read() == b""
    assert edge.stats().connections_open == 0
    writer.close()


async def test_forwarded_headers_already_present_are_left_alone(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}))
    head = UPGRADE[:-2] + FORWARDED.replace(b"127.0.0.1", b"203.0.113.9") + b"\r\n"
    _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(head)
    up_reader, _ = await recorder.next()
    assert await up_reader.readexactly(len(head)) == head
    writer.close()


async def test_backpressure_loses_nothing_when_the_actor_reads_late(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}))
    payload = os.urandom(8 << 20)
    _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE)

    async def push() -> None:
        writer.write(payload)
        await writer.drain()  # only completes as the actor reads
        writer.write_eof()

    pusher = asyncio.create_task(push())
    up_reader, _ = await recorder.next()
    expected_head = UPGRADE[:-2] + FORWARDED.replace(b"https", b"http") + b"\r\n"
    assert await up_reader.readexactly(len(expected_head)) == expected_head
    assert await up_reader.read() == payload
    await pusher
    writer.close()


async def test_caller_hanging_up_closes_the_actor_side(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}))
    _, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE + b"x")
    up_reader, _ = await recorder.next()
    await up_reader.readuntil(b"\r\n\r\nx")
    writer.close()
    assert await up_reader.read() == b""


async def test_caller_reset_aborts_the_actor_side(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}))
    _, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE + b"x")
    up_reader, _ = await recorder.next()
    await up_reader.readuntil(b"\r\n\r\nx")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # RST, not FIN
    with contextlib.suppress(ConnectionResetError):
        assert await up_reader.read() == b""
    assert edge.stats().connections_open == 0


async def test_actor_closing_closes_the_caller_side(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE)
    _, up_writer = await recorder.next()
    up_writer.write(b"last words")
    up_writer.close()
    assert await reader.read() == b"last words"
    writer.close()


async def test_stop_drops_live_connections(make_edge: EdgeFactory, recorder: Recorder) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}))
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE)
    up_reader, _ = await recorder.next()
    await up_reader.readuntil(b"\r\n\r\n")
    await edge.stop()
    assert edge.stats().connections_open == 0
    for stream in (reader, up_reader):
        with contextlib.suppress(ConnectionResetError):
            assert await stream.read() == b""
    writer.close()


async def test_stop_while_resolving_drops_the_connection(make_edge: EdgeFactory) -> None:
    resolver = HangingResolver()
    edge = await make_edge(resolver)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE)
    await resolver.asked.wait()
    await edge.stop()
    with contextlib.suppress(ConnectionResetError):
        assert await reader.read() == b""
    assert edge.stats().connections_open == 0
    writer.close()


async def test_logs_name_the_call_but_never_the_query_or_headers(
    make_edge: EdgeFactory, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="serve")
    edge = await make_edge(Resolver({CALL: recorder.address}))
    secret_head = UPGRADE.replace(CALL.encode(), CALL.encode() + b"?token=hunter2", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(secret_head)
    up_reader, up_writer = await recorder.next()
    await up_reader.readuntil(b"\r\n\r\n")
    up_writer.close()
    assert await reader.read() == b""
    writer.close()
    await refused(edge, secret_head.replace(CALL.encode(), b"CA404"))
    text = caplog.text
    assert CALL in text and "CA404" in text
    for secret in ("hunter2", "token", "+9vaX1RSN4cZfgud"):
        assert secret not in text


# -- default path (the Serve proxy) ---------------------------------------------


async def test_plain_http_with_a_body_reaches_the_default_one_request_a_connection(
    make_edge: EdgeFactory, serve_proxy: Address
) -> None:
    resolver = Resolver()
    edge = await make_edge(resolver, serve_proxy)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.port}") as client:
        first = await client.get("/calls?page=2", headers={"Connection": "keep-alive"})
        body = b"x" * 300_000
        second = (await client.post("/webhooks/status", content=body)).json()
        third = (await client.get(f"/media/{CALL}")).json()  # not an upgrade: Serve's
    assert first.headers["connection"] == "close"  # the client opens a new one next
    seen = first.json()
    assert (seen["method"], seen["target"]) == ("GET", "/calls?page=2")
    assert seen["connection"] == ["Connection: close"]  # its own keep-alive replaced
    assert (second["method"], second["body_len"]) == ("POST", len(body))
    assert third["target"] == f"/media/{CALL}"
    assert len({seen["conn"], second["conn"], third["conn"]}) == 3
    stats = edge.stats()
    assert (stats.connections_total, stats.default_total, stats.media_total) == (3, 3, 0)
    assert resolver.asked == []


async def test_a_media_upgrade_after_an_api_request_reaches_the_actor(
    make_edge: EdgeFactory, serve_proxy: Address, actor: Actor
) -> None:
    # A tunnel pools its connections to the edge: a webhook first, then the call's
    # stream. The first connection ended with the webhook's answer, so the stream
    # comes on a new one and is routed by its own head.
    edge = await make_edge(Resolver({CALL: actor.address}), serve_proxy)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"POST /twilio/status/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the edge closed it
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
    writer.close()
    async with connect(f"ws://127.0.0.1:{edge.port}/media/{CALL}", additional_headers=SIGNED) as ws:
        assert await ws.recv() == "hello from actor"
    assert (edge.stats().default_total, edge.stats().media_total) == (1, 1)


async def test_a_client_silent_after_serves_answer_is_closed(
    make_edge: EdgeFactory, serve_proxy: Address
) -> None:
    # Serve answers and closes (the edge asked it to): the client's socket must not stay
    # open until the client closes it, or silent clients pile up sockets in the process
    # that relays every call's audio.
    edge = await make_edge(Resolver(), serve_proxy, linger_s=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /calls HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # to EOF
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"}")
    # The client neither sends nor closes: the edge closes both its sockets by itself.
    await asyncio.wait_for(edge._idle.wait(), 10)
    stats = edge.stats()
    assert (stats.connections_open, stats.connections_total, stats.default_total) == (0, 1, 1)
    assert stats.bytes_to_clients == len(answer)
    writer.close()


async def test_a_client_still_sending_after_serves_answer_gets_all_of_it(
    make_edge: EdgeFactory, serve_proxy: Address
) -> None:
    edge = await make_edge(Resolver(), serve_proxy, linger_s=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET /calls HTTP/1.1\r\nHost: h\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.write(b"GET /more HTTP/1.1\r\nHost: h\r\n\r\n" * 100)  # Serve reads none of it
    length = int(head.partition(b"Content-Length: ")[2].partition(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    assert json.loads(body)["target"] == "/calls"
    await asyncio.wait_for(edge._idle.wait(), 10)
    assert edge.stats().refusals == {}
    writer.close()


CONSOLE_UPGRADE = (
    b"GET /console/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
)


@pytest.mark.parametrize("to_media", [False, True], ids=["upgrade_to_serve", "media"])
async def test_an_upgrade_the_upstream_ends_is_closed_though_the_client_is_silent(
    make_edge: EdgeFactory, recorder: Recorder, to_media: bool
) -> None:
    # An upgrade keeps its connection (no Connection: close), but an upstream that has
    # sent its EOF (Serve refusing the upgrade, an actor ending its call: websockets
    # half-closes once the closing handshake is done) reads nothing more: the edge ends
    # the connection rather than wait for the client's FIN.
    resolver = Resolver({CALL: recorder.address})
    edge = await make_edge(resolver, recorder.address, linger_s=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE if to_media else CONSOLE_UPGRADE)
    up_reader, up_writer = await recorder.next()
    await up_reader.readuntil(b"\r\n\r\n")
    up_writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    up_writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"HTTP/1.1 403 Forbidden\r\n" + (
        b"Content-Length: 0\r\n\r\n"
    )
    assert await asyncio.wait_for(up_reader.read(), 10) == b""  # the upstream's side closed
    await asyncio.wait_for(edge._idle.wait(), 10)  # and the silent client's
    assert edge.stats().connections_open == 0
    writer.close()


async def test_both_sockets_of_a_splice_have_tcp_keepalive(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    # A caller whose network drops sends no FIN: only the kernel's probes find it gone.
    edge = await make_edge(Resolver({CALL: recorder.address}))
    _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE)
    up_reader, _ = await recorder.next()
    await up_reader.readuntil(b"\r\n\r\n")
    [front] = edge._open
    assert front.peer is not None
    for leg in (front, front.peer):
        assert leg.transport is not None
        sock = leg.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == KEEPALIVE_INTERVAL_S
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_COUNT
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 90_000
    writer.close()


async def test_other_websockets_reach_the_default(make_edge: EdgeFactory, actor: Actor) -> None:
    resolver = Resolver()
    edge = await make_edge(resolver, actor.address)
    async with connect(f"ws://127.0.0.1:{edge.port}/console/ws") as ws:
        assert await ws.recv() == "hello from actor"
        await ws.send("ping")
        assert await ws.recv() == "ping"
    assert resolver.asked == []
    assert edge.stats().default_total == 1


# -- refusals ------------------------------------------------------------------


async def refused(edge: MediaEdge, data: bytes) -> tuple[int, bytes]:
    response = await exchange(edge.port, data)
    status_line, _, rest = response.partition(b"\r\n")
    assert b"Connection: close" in rest
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_unknown_call_is_404(make_edge: EdgeFactory) -> None:
    resolver = Resolver()
    edge = await make_edge(resolver)
    assert await refused(edge, UPGRADE) == (404, b"not found\n")
    assert resolver.asked == [CALL]
    assert edge.stats().refusals == {"unknown_call": 1}


async def test_each_refusal_is_handed_on_as_it_happens(
    make_edge: EdgeFactory, serve_proxy: Address
) -> None:
    reasons: list[str] = []
    edge = await make_edge(Resolver(), serve_proxy, head_timeout_s=0.2, on_refused=reasons.append)
    assert (await refused(edge, UPGRADE))[0] == 404
    assert await exchange(edge.port, b"GET /calls HTTP/1.1\r\nHost: h\r\n") == b""
    assert reasons == ["unknown_call", "head_timeout"]


async def test_a_refusal_that_cannot_be_counted_is_answered_all_the_same(
    make_edge: EdgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(reason: str) -> None:
        raise RuntimeError("metrics agent gone")

    edge = await make_edge(Resolver(), on_refused=broken)
    assert await refused(edge, UPGRADE) == (404, b"not found\n")
    assert edge.stats().refusals == {"unknown_call": 1}
    assert "counting a refusal (unknown_call) failed" in caplog.text


async def test_malformed_call_id_is_404_without_asking(make_edge: EdgeFactory) -> None:
    resolver = Resolver()
    edge = await make_edge(resolver)
    head = UPGRADE.replace(CALL.encode(), b"CA..%2F")
    assert (await refused(edge, head))[0] == 404
    assert resolver.asked == []
    assert edge.stats().refusals == {"bad_call_id": 1}


@pytest.mark.parametrize(
    ("resolver", "reason"),
    [(BrokenResolver(), "resolver_error"), (HangingResolver(), "resolver_timeout")],
)
async def test_resolver_failure_is_502(
    make_edge: EdgeFactory, resolver: CallResolver, reason: str
) -> None:
    edge = await make_edge(resolver, resolve_timeout_s=0.05)
    assert (await refused(edge, UPGRADE))[0] == 502
    assert edge.stats().refusals == {reason: 1}


async def test_actor_down_is_502(make_edge: EdgeFactory) -> None:
    edge = await make_edge(Resolver({CALL: closed_port()}))
    assert (await refused(edge, UPGRADE))[0] == 502
    assert edge.stats().refusals == {"upstream_unreachable": 1}


async def test_default_upstream_down_is_502(make_edge: EdgeFactory) -> None:
    edge = await make_edge(Resolver(), closed_port())
    assert (await refused(edge, b"GET /calls HTTP/1.1\r\nHost: h\r\n\r\n"))[0] == 502
    assert edge.stats().refusals == {"default_unreachable": 1}


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
        UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    ],
)
async def test_bad_head_is_400(make_edge: EdgeFactory, serve_proxy: Address, data: bytes) -> None:
    edge = await make_edge(Resolver(), serve_proxy)
    assert (await refused(edge, data))[0] == 400


@pytest.mark.parametrize("complete", [False, True])
async def test_oversized_head_is_431(
    make_edge: EdgeFactory, serve_proxy: Address, complete: bool
) -> None:
    edge = await make_edge(Resolver(), serve_proxy, max_head_bytes=4096)
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + (b"\r\n\r\n" if complete else b"")
    assert (await refused(edge, data))[0] == 431
    assert edge.stats().refusals == {"head_too_large": 1}


async def test_slow_head_is_dropped_at_the_deadline(
    make_edge: EdgeFactory, serve_proxy: Address
) -> None:
    edge = await make_edge(Resolver(), serve_proxy, head_timeout_s=0.2)
    assert await exchange(edge.port, b"GET /calls HTTP/1.1\r\nHost: h\r\n") == b""
    assert edge.stats().refusals == {"head_timeout": 1}
    assert edge.stats().connections_open == 0


async def test_client_leaving_before_the_head_ends_is_not_a_refusal(
    make_edge: EdgeFactory, serve_proxy: Address
) -> None:
    edge = await make_edge(Resolver(), serve_proxy)
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(b"GET / HT")
    writer.write_eof()
    assert await reader.read() == b""
    assert edge.stats().refusals == {}
    writer.close()


def test_media_prefix_must_be_a_directory() -> None:
    with pytest.raises(ValueError, match="media_prefix"):
        MediaEdge(Resolver(), closed_port(), media_prefix="/media")


def test_port_before_start_is_an_error() -> None:
    edge = MediaEdge(Resolver(), closed_port())
    assert not edge.started
    with pytest.raises(RuntimeError):
        _ = edge.port


async def test_a_listener_bound_before_start_is_served_and_closed_at_stop() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    edge = MediaEdge(Resolver(), closed_port())
    await edge.start(sock=listener)
    assert edge.port == port
    answer = await exchange(port, b"GET /media/CAnone HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 502 ")  # no upstream
    await edge.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # nothing listens any more


def test_runs_on_uvloop() -> None:
    import uvloop  # a dependency: missing is a failure, not a skip

    async def main() -> list[object]:
        async with serve(Actor().handler, "127.0.0.1", 0) as server:
            address = ("127.0.0.1", next(iter(server.sockets)).getsockname()[1])
            edge = MediaEdge(Resolver({CALL: address}), closed_port())
            listener = socket.create_server(("127.0.0.1", 0))  # bound early, as local_stack does
            await edge.start(sock=listener)
            assert edge.started and edge.port == listener.getsockname()[1]
            try:
                url = f"ws://127.0.0.1:{edge.port}/media/{CALL}"
                async with connect(url, additional_headers=SIGNED) as ws:
                    got: list[object] = [await ws.recv()]
                    await ws.send("over uvloop")
                    got.append(await ws.recv())
                got.append(await exchange(edge.port, b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"))
            finally:
                await edge.stop()
            return got

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        greeting, echo, bad = runner.run(main())
    assert (greeting, echo) == ("hello from actor", "over uvloop")
    assert isinstance(bad, bytes) and bad.startswith(b"HTTP/1.1 400 ")


# -- what an upgrade may cost: credentials first, then a bounded lookup -----------


async def test_an_upgrade_with_no_credentials_is_403_without_asking(make_edge: EdgeFactory) -> None:
    resolver = Resolver()
    reasons: list[str] = []
    edge = await make_edge(resolver, on_refused=reasons.append)
    unsigned = UPGRADE.replace(b"X-Twilio-Signature: +9vaX1RSN4cZfgud/T6W/NCbhLo=\r\n", b"")
    assert await refused(edge, unsigned) == (403, b"forbidden\n")
    assert resolver.asked == []
    assert reasons == ["no_credentials"]
    assert edge.stats().media_total == 0


async def test_a_browsers_token_offer_is_enough_to_reach_the_actor(
    make_edge: EdgeFactory, actor: Actor
) -> None:
    # A web call: no signature, the one-time token offered as a subprotocol.
    resolver = Resolver({CALL: actor.address})
    edge = await make_edge(resolver)
    offered = [Subprotocol("other"), Subprotocol("token.tok")]
    async with connect(f"ws://127.0.0.1:{edge.port}/media/{CALL}", subprotocols=offered) as ws:
        assert await ws.recv() == "hello from actor"
    request = actor.requests[0].request
    assert request is not None
    assert request.headers["Sec-WebSocket-Protocol"] == "other, token.tok"
    assert resolver.asked == [CALL]


async def test_a_wrong_websocket_version_is_426_naming_13(make_edge: EdgeFactory) -> None:
    resolver = Resolver()
    edge = await make_edge(resolver)
    answer = await exchange(edge.port, UPGRADE.replace(b"Version: 13", b"Version: 8"))
    assert answer.startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in answer.partition(b"\r\n\r\n")[0]
    assert resolver.asked == []
    assert edge.stats().refusals == {"bad_websocket_version": 1}


async def test_an_upgrade_over_the_lookup_bound_is_503_without_asking(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    resolver = HeldResolver()
    reasons: list[str] = []
    edge = await make_edge(resolver, max_lookups=2, on_refused=reasons.append)
    waiting = [await asyncio.open_connection("127.0.0.1", edge.port) for _ in range(2)]
    for _, writer in waiting:
        writer.write(UPGRADE)
    held = [await resolver.next(), await resolver.next()]
    assert edge.stats().lookups_in_flight == 2

    answer = await exchange(edge.port, UPGRADE)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nConnection: close" in head
    assert body == b"service unavailable\n"
    assert resolver.asked == [CALL, CALL]  # the third was never looked up
    assert reasons == ["busy"] and edge.stats().refusals == {"busy": 1}
    assert edge.stats().media_total == 2

    # The held ones still go through once answered.
    for answer_later in held:
        answer_later.set_result(recorder.address)
    for _ in held:
        up_reader, _ = await recorder.next()
        await up_reader.readuntil(b"\r\n\r\n")
    assert edge.stats().lookups_in_flight == 0
    for _, writer in waiting:
        writer.close()


async def test_a_spliced_call_holds_no_lookup_place(
    make_edge: EdgeFactory, recorder: Recorder
) -> None:
    edge = await make_edge(Resolver({CALL: recorder.address}), max_lookups=1)
    calls = []
    for _ in range(3):  # one place, three live calls
        _reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(UPGRADE)
        up_reader, _ = await recorder.next()
        await up_reader.readuntil(b"\r\n\r\n")
        calls.append(writer)
    stats = edge.stats()
    assert (stats.media_total, stats.lookups_in_flight, dict(stats.refusals)) == (3, 0, {})
    for writer in calls:
        writer.close()


async def wait_for_lookup_place(edge: MediaEdge, resolver: HeldResolver) -> None:
    """With ``max_lookups=1``: the next upgrade is looked up, so the place was free."""
    _, writer = await asyncio.open_connection("127.0.0.1", edge.port)
    writer.write(UPGRADE)
    (await resolver.next()).set_result(None)
    writer.close()


async def test_a_lookup_that_answers_frees_its_place(make_edge: EdgeFactory) -> None:
    resolver = HeldResolver()
    edge = await make_edge(resolver, max_lookups=1)
    reply = asyncio.create_task(refused(edge, UPGRADE))
    (await resolver.next()).set_result(None)
    assert (await reply)[0] == 404
    assert edge.stats().lookups_in_flight == 0
    await wait_for_lookup_place(edge, resolver)
    assert edge.stats().refusals.get("busy") is None


async def test_a_lookup_that_fails_frees_its_place(make_edge: EdgeFactory) -> None:
    resolver = HeldResolver()
    edge = await make_edge(resolver, max_lookups=1)
    reply = asyncio.create_task(refused(edge, UPGRADE))
    (await resolver.next()).set_exception(RuntimeError("pool actor died"))
    assert (await reply)[0] == 502
    assert edge.stats().lookups_in_flight == 0
    await wait_for_lookup_place(edge, resolver)
    assert edge.stats().refusals.get("busy") is None


async def test_a_lookup_given_up_on_keeps_its_place_until_it_ends(
    make_edge: EdgeFactory,
) -> None:
    # A Ray call the edge stopped waiting for still runs at the pool: until it ends, it
    # counts against the bound (a stuck pool is sent at most max_lookups calls).
    resolver = HeldResolver()
    edge = await make_edge(resolver, max_lookups=1, resolve_timeout_s=0.05)
    assert (await refused(edge, UPGRADE))[0] == 502  # never answered: the edge gave up
    assert edge.stats().refusals == {"resolver_timeout": 1}
    given_up = await resolver.next()
    assert not given_up.cancelled()  # the lookup itself runs on
    assert edge.stats().lookups_in_flight == 1
    assert (await refused(edge, UPGRADE))[0] == 503
    assert resolver.asked == [CALL]  # not asked again meanwhile
    given_up.set_result(None)  # the pool answers, late
    edge.resolve_timeout_s = 5.0
    await wait_for_lookup_place(edge, resolver)


async def test_stop_while_looking_up_frees_the_places(make_edge: EdgeFactory) -> None:
    resolver = HeldResolver()
    edge = await make_edge(resolver, max_lookups=2)
    clients = [await asyncio.open_connection("127.0.0.1", edge.port) for _ in range(2)]
    for _, writer in clients:
        writer.write(UPGRADE)
    await resolver.next()
    await resolver.next()
    assert edge.stats().lookups_in_flight == 2
    await edge.stop()
    assert edge.stats().lookups_in_flight == 0
    for _, writer in clients:
        writer.close()


class QuietTransport(asyncio.Transport):
    """A client socket that only records being paused and aborted."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def pause_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


async def test_a_lookup_dropped_before_it_starts_frees_its_place() -> None:
    # Lost in the loop iteration its head arrived in (stop(), an abort): the lookup's
    # task is cancelled before its first step, so no finally of its own ever runs.
    resolver = Resolver()
    edge = MediaEdge(resolver, closed_port(), max_lookups=1)
    front = _Front(edge)
    front.connection_made(QuietTransport())
    front.data_received(UPGRADE)
    assert edge.stats().lookups_in_flight == 1
    task = front._task
    assert task is not None
    front.connection_lost(ConnectionResetError())
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and resolver.asked == []
    assert edge.stats().lookups_in_flight == 0


def test_max_lookups_must_allow_one() -> None:
    with pytest.raises(ValueError, match="max_lookups"):
        MediaEdge(Resolver(), closed_port(), max_lookups=0)
