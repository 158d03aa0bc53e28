"""PicowsSocket and serve_media against a real ``websockets`` client on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
import websockets
from picows import WSTransport
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.typing import Subprotocol

from actors import picows_sockets
from actors.picows_sockets import WRITE_HIGH_WATER, MediaServer, PicowsSocket, serve_media
from switchboard.errors import SocketClosed

pytestmark = pytest.mark.integration

CALL = "CA" + "0" * 32
TIMEOUT = 10.0  # guards against a hang; nothing here is expected to take long


@dataclass
class Media:
    """A media server whose ``check`` answers ``refusal`` and records what it saw."""

    server: MediaServer | None = None
    servers: list[MediaServer] = field(default_factory=list)
    refusal: tuple[int, str] | dict[str, str] | None = None
    seen: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)
    accepted: asyncio.Queue[PicowsSocket] = field(default_factory=asyncio.Queue)

    async def serve(self, **kwargs: Any) -> MediaServer:
        """Start a server with these ``serve_media`` options; later calls replace it."""
        self.server = await serve_media("127.0.0.1", 0, self.check, self.on_socket, **kwargs)
        self.servers.append(self.server)
        return self.server

    def check(
        self, path: str, headers: Mapping[str, str]
    ) -> tuple[int, str] | dict[str, str] | None:
        self.seen.append((path, headers))
        return self.refusal

    async def on_socket(self, socket: PicowsSocket) -> None:
        await self.accepted.put(socket)
        await socket.wait_closed()

    def url(self, path: str = f"/media/{CALL}") -> str:
        assert self.server is not None
        host, port = self.server.address
        return f"ws://{host}:{port}{path}"

    async def connect(self, **kwargs: object) -> tuple[ClientConnection, PicowsSocket]:
        client = await websockets.connect(self.url(), **kwargs)  # type: ignore[arg-type]
        socket = await asyncio.wait_for(self.accepted.get(), TIMEOUT)
        return client, socket


@pytest_asyncio.fixture
async def media() -> AsyncIterator[Media]:
    media = Media()
    await media.serve()
    yield media
    for server in media.servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def closed_with(client: ClientConnection) -> tuple[int | None, str | None]:
    await asyncio.wait_for(client.wait_closed(), TIMEOUT)
    return client.close_code, client.close_reason


async def test_port_0_binds_a_free_port_and_reports_it(media: Media) -> None:
    assert media.server is not None
    host, port = media.server.address
    assert (host, port != 0) == ("127.0.0.1", True)
    client, _ = await media.connect()
    await client.close()


@pytest.mark.parametrize(
    ("status", "body"),
    [(403, "invalid X-Twilio-Signature\n"), (404, "no such call here\n"), (409, "connected\n")],
)
async def test_a_refused_upgrade_gets_the_checks_status_and_body(
    media: Media, status: int, body: str
) -> None:
    media.refusal = (status, body)
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(media.url())
    assert refused.value.response.status_code == status
    assert refused.value.response.body == body.encode()
    assert media.accepted.empty()


async def test_a_check_can_accept_with_headers_of_its_choosing(media: Media) -> None:
    media.refusal = {"Sec-WebSocket-Protocol": "token.abc"}  # the one offered it accepts
    client, socket = await media.connect(subprotocols=[Subprotocol("token.abc")])
    assert client.subprotocol == "token.abc"
    await client.send("hi")
    assert await asyncio.wait_for(socket.recv(), TIMEOUT) == "hi"
    await client.close()


async def test_check_sees_the_raw_target_and_headers_in_any_case(media: Media) -> None:
    headers = {
        "x-twilio-signature": "c2lnbmF0dXJl",
        "X-Forwarded-Proto": "https",
        "X-FORWARDED-HOST": "calls.example.com",
    }
    target = f"/media/{CALL}?token=a%20b&x=1"
    client = await websockets.connect(media.url(target), additional_headers=headers)
    await client.close()
    [(path, seen)] = media.seen
    assert path == target
    assert seen["X-Twilio-Signature"] == "c2lnbmF0dXJl"
    assert seen.get("x-forwarded-proto") == "https"
    assert seen["X-Forwarded-Host"] == "calls.example.com"
    assert seen.get("X-Forwarded-For") is None


async def test_a_check_that_fails_refuses_with_500_and_no_details(media: Media) -> None:
    def broken(path: str, headers: Mapping[str, str]) -> tuple[int, str] | None:
        raise KeyError("secret-detail")

    server = await serve_media("127.0.0.1", 0, broken, media.on_socket)
    host, port = server.address
    try:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"ws://{host}:{port}/media/x")
        assert refused.value.response.status_code == 500
        assert b"secret-detail" not in refused.value.response.body
    finally:
        server.close()
        await server.wait_closed()


async def test_text_goes_both_ways(media: Media) -> None:
    client, socket = await media.connect()
    await client.send('{"event":"connected"}')
    assert await socket.recv() == '{"event":"connected"}'
    await socket.send('{"event":"clear","streamSid":"MZ1"}')
    assert await asyncio.wait_for(client.recv(), TIMEOUT) == '{"event":"clear","streamSid":"MZ1"}'
    await client.send("ünïcödé ✓")
    assert await socket.recv() == "ünïcödé ✓"
    await client.send(b"\x00\x01")
    assert await socket.recv() == b"\x00\x01"
    await client.close()


async def test_a_fragmented_message_arrives_whole(media: Media) -> None:
    client, socket = await media.connect()
    await client.send(iter(['{"event":', '"media",', ' "x": "é"}']))
    assert json.loads(await socket.recv()) == {"event": "media", "x": "é"}
    await client.send("after")
    assert await socket.recv() == "after"
    await client.close()


async def test_pings_are_answered(media: Media) -> None:
    client, _ = await media.connect()
    pong = await client.ping(b"are you there")
    await asyncio.wait_for(pong, TIMEOUT)
    await client.close()


async def test_the_server_closing_with_a_code_reaches_the_client(media: Media) -> None:
    client, socket = await media.connect()
    await socket.close(1008, "invalid stream token")
    assert await closed_with(client) == (1008, "invalid stream token")
    with pytest.raises(SocketClosed) as closed:
        await socket.recv()
    assert (closed.value.code, closed.value.reason) == (1008, "invalid stream token")
    with pytest.raises(SocketClosed):
        await socket.send("too late")


async def test_the_client_closing_ends_the_servers_recv_with_its_code(media: Media) -> None:
    client, socket = await media.connect()
    await client.send("last words")
    await client.close(1000, "bye")
    assert await socket.recv() == "last words"
    with pytest.raises(SocketClosed) as closed:
        await socket.recv()
    assert (closed.value.code, closed.value.reason) == (1000, "bye")
    assert await closed_with(client) == (1000, "")  # the server echoed the code
    assert socket.closed is not None


async def test_a_waiting_recv_wakes_up_when_the_client_closes(media: Media) -> None:
    client, socket = await media.connect()
    waiting = asyncio.ensure_future(socket.recv())
    await client.close(4001, "custom")
    with pytest.raises(SocketClosed) as closed:
        await asyncio.wait_for(waiting, TIMEOUT)
    assert (closed.value.code, closed.value.reason) == (4001, "custom")


async def test_the_peers_close_code_is_echoed(media: Media) -> None:
    client, socket = await media.connect()
    await client.close(4001, "custom")
    assert await closed_with(client) == (4001, "")  # RFC 6455 5.5.1: its code, back
    with pytest.raises(SocketClosed) as closed:
        await asyncio.wait_for(socket.recv(), TIMEOUT)
    assert closed.value.code == 4001


async def test_a_close_without_a_code_is_answered_with_1000(media: Media) -> None:
    # 1005 says "no code" to our side; it must never go in a close frame (RFC 6455 7.4.1).
    client, socket = await media.connect()
    client.transport.write(Frame(Opcode.CLOSE, b"").serialize(mask=True))
    with pytest.raises(SocketClosed) as closed:
        await asyncio.wait_for(socket.recv(), TIMEOUT)
    assert closed.value.code == 1005
    assert (await closed_with(client))[0] == 1000


async def test_a_lost_connection_ends_recv_with_1006(media: Media) -> None:
    client, socket = await media.connect()
    client.transport.abort()
    with pytest.raises(SocketClosed) as closed:
        await asyncio.wait_for(socket.recv(), TIMEOUT)
    assert closed.value.code == 1006


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(media: Media) -> None:
    client, socket = await media.connect()
    await client.send(b"\xff\xfe", text=True)
    assert (await closed_with(client))[0] == 1007
    with pytest.raises(SocketClosed) as closed:
        await socket.recv()
    assert closed.value.code == 1007


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
async def test_a_new_message_inside_a_fragmented_one_closes_with_1002(
    media: Media, opcode: Opcode
) -> None:
    # RFC 6455 5.4: after a frame without FIN only continuation frames (and control
    # frames) may come. websockets will not send this, so the frames go out raw.
    client, socket = await media.connect()
    frames = [Frame(Opcode.TEXT, b"first ", fin=False), Frame(opcode, b"second")]
    client.transport.write(b"".join(f.serialize(mask=True) for f in frames))
    with pytest.raises(SocketClosed) as closed:
        await asyncio.wait_for(socket.recv(), TIMEOUT)  # nothing was delivered
    assert closed.value.code == 1002
    assert (await closed_with(client))[0] == 1002


@pytest.mark.parametrize("fragmented", [False, True])
async def test_a_message_over_the_limit_closes_with_1009(media: Media, fragmented: bool) -> None:
    await media.serve(max_message=1000)
    client, socket = await media.connect(max_size=None)
    await client.send("x" * 1000)
    assert await socket.recv() == "x" * 1000
    await client.send(iter(["x" * 600] * 2) if fragmented else "x" * 1001)
    assert (await closed_with(client))[0] == 1009
    with pytest.raises(SocketClosed) as closed:
        await socket.recv()
    assert closed.value.code == 1009


async def test_the_socket_is_closed_with_1000_when_the_handler_returns() -> None:
    async def brief(socket: PicowsSocket) -> None:
        await socket.send("hello")

    server = await serve_media("127.0.0.1", 0, lambda path, headers: None, brief)
    host, port = server.address
    try:
        client = await websockets.connect(f"ws://{host}:{port}/media/x")
        assert await client.recv() == "hello"
        assert await closed_with(client) == (1000, "")
    finally:
        server.close()
        await server.wait_closed()


async def test_a_handler_that_fails_closes_with_1011() -> None:
    async def failing(socket: PicowsSocket) -> None:
        raise RuntimeError("boom")

    server = await serve_media("127.0.0.1", 0, lambda path, headers: None, failing)
    host, port = server.address
    try:
        client = await websockets.connect(f"ws://{host}:{port}/media/x")
        assert await closed_with(client) == (1011, "internal error")
    finally:
        server.close()
        await server.wait_closed()


async def test_closing_the_server_closes_live_sockets_with_1001(media: Media) -> None:
    client, socket = await media.connect()
    assert media.server is not None
    media.server.close()
    assert await closed_with(client) == (1001, "server closing")
    with pytest.raises(SocketClosed) as closed:
        await socket.recv()
    assert closed.value.code == 1001


async def test_close_codes_that_cannot_be_sent_are_refused(media: Media) -> None:
    client, socket = await media.connect()
    with pytest.raises(ValueError):
        await socket.close(1006)
    await socket.close(1000, "r" * 200)  # a long reason is cut to fit a control frame
    code, reason = await closed_with(client)
    assert (code, reason) == (1000, "r" * 123)


async def test_send_waits_while_the_reader_is_slow(media: Media) -> None:
    # The client's reading stops once one message waits unread, so the kernel's
    # buffers fill, then the transport's, until picows pauses writing.
    client, socket = await media.connect(max_queue=1, max_size=None)
    chunk = "x" * 16384
    sent = 0
    while not socket.writing_paused:
        await socket.send(chunk)
        sent += 1
        assert sent < 20_000, "320 MB sent and never paused"
    assert socket.transport is not None
    buffered = socket.transport.underlying_transport.get_write_buffer_size()
    assert buffered <= WRITE_HIGH_WATER + len(chunk) + 16  # bounded: one frame over the mark

    blocked = asyncio.ensure_future(socket.send("last"))
    await asyncio.sleep(0)  # one loop turn: an unblocked send would finish in it
    assert not blocked.done()
    assert socket.transport.underlying_transport.get_write_buffer_size() == buffered

    for _ in range(sent):
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == chunk
    await asyncio.wait_for(blocked, TIMEOUT)
    assert await asyncio.wait_for(client.recv(), TIMEOUT) == "last"
    assert not socket.writing_paused
    await client.close()


async def test_try_send_refuses_while_writing_is_paused_and_sends_once_resumed(
    media: Media,
) -> None:
    # The shell's fast path: paused, it must say no (the text then waits in the writer's
    # queue, in order), not push one more frame past the high-water mark.
    client, socket = await media.connect(max_queue=1, max_size=None)
    chunk = "x" * 16384
    sent = 0
    while not socket.writing_paused:
        await socket.send(chunk)
        sent += 1
        assert sent < 20_000, "320 MB sent and never paused"
    assert socket.transport is not None
    buffered = socket.transport.underlying_transport.get_write_buffer_size()
    assert socket.try_send("refused") is False
    assert socket.transport.underlying_transport.get_write_buffer_size() == buffered

    for _ in range(sent):
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == chunk
    assert not socket.writing_paused  # all of it went out: resume_writing came
    assert socket.try_send("sent") is True
    assert await asyncio.wait_for(client.recv(), TIMEOUT) == "sent"  # nothing else came
    await client.close()


async def test_a_send_waiting_on_backpressure_fails_when_the_peer_vanishes(media: Media) -> None:
    client, socket = await media.connect(max_queue=1, max_size=None)
    chunk = "x" * 16384
    for _ in range(20_000):
        if socket.writing_paused:
            break
        await socket.send(chunk)
    blocked = asyncio.ensure_future(socket.send("never"))
    await asyncio.sleep(0)
    assert not blocked.done()
    client.transport.abort()
    with pytest.raises(SocketClosed):
        await asyncio.wait_for(blocked, TIMEOUT)


async def test_a_close_the_client_never_answers_ends_in_an_abort(
    media: Media, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(picows_sockets, "CLOSE_TIMEOUT_S", 0.05)
    client, socket = await media.connect()
    client.transport.pause_reading()  # the client will not see our close frame
    try:
        await asyncio.wait_for(socket.close(1000), TIMEOUT)
    finally:
        client.transport.abort()
    assert socket.transport is not None and socket.transport.is_disconnected


async def test_a_close_given_up_while_it_waits_drops_the_connection(
    media: Media, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A call shell closing gives up the close of a renewed session's old socket: that
    # socket must not stay open behind it, waiting on a peer that never answers.
    monkeypatch.setattr(picows_sockets, "CLOSE_TIMEOUT_S", 3600.0)
    client, socket = await media.connect()
    client.transport.pause_reading()  # the client will not see our close frame
    try:
        closing = asyncio.ensure_future(socket.close(1000))
        await asyncio.sleep(0)  # one turn: the close frame is sent, its answer awaited
        assert not closing.done()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await asyncio.wait_for(socket.wait_closed(), TIMEOUT)
    finally:
        client.transport.abort()
    assert socket.transport is not None and socket.transport.is_disconnected


async def test_recv_in_two_tasks_at_once_is_refused(media: Media) -> None:
    client, socket = await media.connect()
    first = asyncio.ensure_future(socket.recv())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await socket.recv()
    await client.send("one")
    assert await asyncio.wait_for(first, TIMEOUT) == "one"
    await client.close()


async def test_a_closed_client_connection_is_seen_by_websockets_too(media: Media) -> None:
    client, socket = await media.connect()
    await socket.close(1000, "done")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), TIMEOUT)


async def test_a_client_that_stops_answering_pings_is_dropped(media: Media) -> None:
    await media.serve(keepalive_s=0.05)
    client, socket = await media.connect(ping_interval=None)
    client.transport.pause_reading()  # our pings go unanswered
    try:
        with pytest.raises(SocketClosed) as closed:
            await asyncio.wait_for(socket.recv(), TIMEOUT)
        assert closed.value.code == 1001
    finally:
        client.transport.abort()


async def test_an_idle_client_that_answers_pings_stays(
    media: Media, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinged = asyncio.Event()
    pings = 0

    def ping(self: PicowsSocket, transport: WSTransport) -> None:
        nonlocal pings
        pings += 1
        if pings == 3:
            pinged.set()
        transport.send_ping()

    monkeypatch.setattr(PicowsSocket, "send_user_specific_ping", ping)
    await media.serve(keepalive_s=0.05)
    client, socket = await media.connect(ping_interval=None)
    await asyncio.wait_for(pinged.wait(), TIMEOUT)
    assert socket.closed is None
    await socket.send("still here")
    assert await asyncio.wait_for(client.recv(), TIMEOUT) == "still here"
    await client.close()
