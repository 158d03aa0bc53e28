"""connect_realtime against the Realtime emulator, and its handshake against the SDK's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import websockets
from openai import AsyncOpenAI
from websockets.asyncio.server import ServerConnection

from actors import picows_sockets, realtime_connect
from actors.realtime_connect import connect_realtime, realtime_headers, realtime_url
from sim.testing_realtime import PCMU_SESSION, RunningRealtimeEmulator, run_realtime_emulator
from switchboard.errors import ConfigError, RealtimeServiceError, SocketClosed

pytestmark = pytest.mark.integration

TIMEOUT = 10.0  # guards against a hang
KEY = "sk-test"
ROOT = Path(__file__).resolve().parents[2]
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[RunningRealtimeEmulator]:
    async with run_realtime_emulator(first_audio_ms=40, speed=20.0) as running:
        yield running
        for session in running.sessions:
            assert session.violations == []


async def recv_json(sock: object) -> dict[str, object]:
    text = await asyncio.wait_for(sock.recv(), TIMEOUT)  # type: ignore[attr-defined]
    return dict(json.loads(text))


async def test_a_session_opens_and_takes_a_session_update(emu: RunningRealtimeEmulator) -> None:
    url = realtime_url(emu.base_url, "gpt-realtime")
    sock = await connect_realtime(url, KEY)
    assert (await recv_json(sock))["type"] == "session.created"
    await sock.send(json.dumps({"type": "session.update", "session": PCMU_SESSION}))
    while (event := await recv_json(sock))["type"] != "session.updated":
        assert event["type"] != "error", event
    session = event["session"]
    assert isinstance(session, dict)
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    await sock.close()
    record = await emu.wait_for_session(0)
    await emu.wait_closed(record)
    assert (record.model, record.close_code) == ("gpt-realtime", 1000)
    assert record.headers["user-agent"].startswith("AsyncOpenAI/Python ")
    with pytest.raises(SocketClosed):
        await sock.recv()


async def test_a_wrong_key_is_a_service_error_that_names_the_cause_not_the_key(
    emu: RunningRealtimeEmulator,
) -> None:
    # The service takes the upgrade, then refuses the session in-band: error, close 3000.
    key = "sk-not-the-key-9876"
    with pytest.raises(RealtimeServiceError) as refused:
        await connect_realtime(realtime_url(emu.base_url, "gpt-realtime"), key)
    message = str(refused.value)
    assert "the OpenAI API key is invalid" in message
    assert "invalid_api_key" in message
    assert key not in message and "9876" not in message  # not even the ends the service shows
    assert (refused.value.close_code, refused.value.close_reason) == (
        3000,
        "invalid_request_error.invalid_api_key",
    )
    record = await emu.wait_for_session(0)
    await emu.wait_closed(record)
    assert record.close_code == 3000
    assert [e["type"] for e in record.server_events()] == ["error"]


async def test_a_session_closed_before_its_first_event_is_a_service_error() -> None:
    async def refuse(ws: ServerConnection) -> None:
        await ws.close(4000, "invalid_request_error.beta_api_shape_disabled")

    async with websockets.serve(refuse, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(RealtimeServiceError) as refused:
            await connect_realtime(realtime_url(f"http://127.0.0.1:{port}/v1", "m"), KEY)
    assert "closed before the session opened" in str(refused.value)
    assert (refused.value.close_code, refused.value.close_reason) == (
        4000,
        "invalid_request_error.beta_api_shape_disabled",
    )


async def test_an_error_first_that_quotes_the_key_is_scrubbed_and_the_socket_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(realtime_connect, "CLOSE_WAIT_S", 0.05)  # a bound: no close will come
    closed: list[tuple[int | None, str | None]] = []

    async def refuse(ws: ServerConnection) -> None:
        error = {"type": "server_error", "code": None, "message": f"no {KEY} here"}
        await ws.send(json.dumps({"type": "error", "event_id": "e1", "error": error}))
        await ws.wait_closed()  # it does not close: the client gives up and closes
        closed.append((ws.close_code, ws.close_reason))

    async with websockets.serve(refuse, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(RealtimeServiceError) as refused:
            await connect_realtime(realtime_url(f"http://127.0.0.1:{port}/v1", "m"), KEY)
    message = str(refused.value)
    assert "the service refused the session: no <api key> here (server_error)" in message
    assert KEY not in message
    assert refused.value.close_code is None  # the service sent none: it closed nothing
    assert closed == [(1000, "session not opened")]


async def test_the_first_event_is_still_the_callers_to_read() -> None:
    async def hello(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created","n":1}')
        await ws.send('{"type":"conversation.created","n":2}')
        await ws.wait_closed()

    async with websockets.serve(hello, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sock = await connect_realtime(realtime_url(f"http://127.0.0.1:{port}/v1", "m"), KEY)
        assert [(await recv_json(sock))["n"] for _ in range(2)] == [1, 2]
        await sock.close()


async def test_a_refused_connection_is_a_service_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RealtimeServiceError) as refused:
        await connect_realtime(f"ws://127.0.0.1:{port}/v1/realtime?model=m", KEY)
    assert "ConnectionRefusedError" in str(refused.value)
    with pytest.raises(RealtimeServiceError) as behind_a_proxy:  # user:password@ not shown
        await connect_realtime(f"ws://user:hunter2@127.0.0.1:{port}/v1/realtime", KEY)
    assert "hunter2" not in str(behind_a_proxy.value)
    assert "user:***@127.0.0.1" in str(behind_a_proxy.value)


async def test_a_server_that_never_answers_is_a_service_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the upgrade request, answers nothing
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(RealtimeServiceError) as refused:
            await connect_realtime(f"ws://127.0.0.1:{port}/v1/realtime", KEY, open_timeout=0.2)
        assert "no answer within 0.2 s" in str(refused.value)
    finally:
        server.close()


async def test_a_service_stalled_after_the_upgrade_is_dropped_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Upgraded, then silent: no session.created, and no answer to our close either. The
    # open fails at its timeout and the socket is dropped at once; waiting for a close
    # from a service that stalled would hold an inbound call's webhook past Twilio's.
    monkeypatch.setattr(picows_sockets, "CLOSE_TIMEOUT_S", 3600.0)  # the old wait: for ever
    dropped = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await reader.read()  # whatever the client sends, until it drops the connection
        dropped.set()
        writer.close()

    server = await asyncio.start_server(stalled, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=m"
        with pytest.raises(RealtimeServiceError) as stalled_out:
            await asyncio.wait_for(connect_realtime(url, KEY, open_timeout=0.2), TIMEOUT)
        assert "no answer within 0.2 s" in str(stalled_out.value)
        await asyncio.wait_for(dropped.wait(), TIMEOUT)
    finally:
        server.close()


async def test_no_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        await connect_realtime("ws://127.0.0.1:9/v1/realtime?model=m", "")


def test_a_url_that_is_not_a_websocket_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        realtime_url("ftp://example.com/v1", "gpt-realtime")


@pytest.mark.parametrize(
    "base_url",
    [
        None,
        "https://api.openai.com/v1",
        "https://api.openai.com/v1/",
        "http://127.0.0.1:8123/v1",
        "http://127.0.0.1:8123",
        "https://gateway.example.com/openai/v1?api-version=2",
    ],
)
@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-realtime-2025-08-28"])
def test_realtime_url_is_the_sdks(
    base_url: str | None, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = AsyncOpenAI(api_key=KEY, base_url=base_url)
    base = str(client.realtime.connect(model=model)._prepare_url())
    joiner = "&" if "?" in base else "?"
    assert realtime_url(base_url, model) == f"{base}{joiner}model={model}"


async def test_the_handshake_is_the_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same request target and headers (but the random key) as the SDK's own connect."""
    for name in ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    requests: list[tuple[str, list[tuple[str, str]]]] = []

    async def record(ws: ServerConnection) -> None:
        requests.append((ws.request.path, list(ws.request.headers.raw_items())))  # type: ignore[union-attr]
        await ws.send('{"type":"session.created"}')
        await ws.wait_closed()

    async with websockets.serve(record, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        base = f"http://127.0.0.1:{port}/v1"
        sdk = await AsyncOpenAI(api_key=KEY, base_url=base).realtime.connect(model="m").enter()
        await sdk.close()
        ours = await connect_realtime(realtime_url(base, "m"), KEY)
        await ours.close()
    (sdk_path, sdk_headers), (our_path, our_headers) = requests
    assert our_path == sdk_path == "/v1/realtime?model=m"
    handshake = {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"}

    def split(headers: list[tuple[str, str]]) -> tuple[set[str], list[tuple[str, str]]]:
        names = {k.lower() for k, _ in headers if k.lower() in handshake}
        return names, [(k, v) for k, v in headers if k.lower() not in handshake]

    assert split(our_headers) == split(sdk_headers)
    assert split(our_headers)[1] == realtime_headers(KEY)


async def test_a_service_that_stops_answering_pings_is_dropped() -> None:
    async def deaf(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created"}')
        ws.transport.pause_reading()  # our pings go unanswered
        await dropped.wait()
        ws.transport.abort()  # it would not see the disconnect otherwise

    dropped = asyncio.Event()

    async with websockets.serve(deaf, "127.0.0.1", 0, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = realtime_url(f"http://127.0.0.1:{port}/v1", "m")
        sock = await connect_realtime(url, KEY, keepalive_s=0.05)
        assert (await recv_json(sock))["type"] == "session.created"
        with pytest.raises(SocketClosed) as closed:
            await asyncio.wait_for(sock.recv(), TIMEOUT)
        dropped.set()
        assert closed.value.code == 1001


def test_organization_and_project_headers_are_the_sdks() -> None:
    client = AsyncOpenAI(api_key=KEY, organization="org-1", project="proj-1")
    sdk = {k: v for k, v in client.default_headers.items() if k.startswith("OpenAI-")}
    ours = dict(realtime_headers(KEY, organization="org-1", project="proj-1"))
    assert (
        {k: ours[k] for k in sdk}
        == sdk
        == {"OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1"}
    )


def test_the_modules_do_not_import_openai() -> None:
    code = (
        "import sys, actors.realtime_connect, actors.picows_sockets; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'openai'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- wss ---------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_wss_checks_the_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def hello(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created"}')
        await ws.wait_closed()

    async with websockets.serve(hello, "127.0.0.1", 0, ssl=server_tls) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = realtime_url(f"https://127.0.0.1:{port}/v1", "gpt-realtime")
        assert url.startswith("wss://")
        with pytest.raises(RealtimeServiceError) as untrusted:  # default context: system CAs
            await connect_realtime(url, KEY)
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
        sock = await connect_realtime(url, KEY, ssl_context=ssl.create_default_context(cafile=cert))
        assert (await recv_json(sock))["type"] == "session.created"
        await sock.close()


# -- proxies -----------------------------------------------------------------

PROXY_VARIABLES = ("http", "https", "ws", "wss", "socks", "all", "no")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the environment the tests run in, either case."""
    for name in PROXY_VARIABLES:
        for variable in (f"{name}_proxy", f"{name.upper()}_PROXY"):
            monkeypatch.delenv(variable, raising=False)
    return monkeypatch


class TunnelProxy:
    """An HTTP CONNECT proxy on loopback that tunnels to loopback only."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.requests: list[bytes] = []  # each CONNECT's head
        self.answer = answer  # a refusal to give instead of tunnelling
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TunnelProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        host, _, port = target.rpartition(b":")
        if self.answer is not None or method != b"CONNECT" or host != b"127.0.0.1":
            writer.write(self.answer or b"HTTP/1.1 403 Forbidden\r\n\r\n")
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_the_environments_proxy_carries_the_session(
    emu: RunningRealtimeEmulator, no_proxy_env: pytest.MonkeyPatch
) -> None:
    # As websockets' connect (the SDK's transport): HTTPS_PROXY, through a CONNECT tunnel.
    url = realtime_url(emu.base_url, "gpt-realtime")
    port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    async with TunnelProxy() as proxy:
        no_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        sock = await connect_realtime(url, KEY)
        assert (await recv_json(sock))["type"] == "session.created"
        await sock.close()
    [head] = proxy.requests
    assert head.startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n".encode())
    assert b"Authorization" not in head  # the key goes in the tunnel, not to the proxy


async def test_no_proxy_and_proxy_none_go_direct(
    emu: RunningRealtimeEmulator, no_proxy_env: pytest.MonkeyPatch
) -> None:
    url = realtime_url(emu.base_url, "gpt-realtime")
    async with TunnelProxy() as proxy:
        no_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        no_proxy_env.setenv("NO_PROXY", "localhost,127.0.0.1")
        sock = await connect_realtime(url, KEY)
        await sock.close()
        no_proxy_env.delenv("NO_PROXY")
        sock = await connect_realtime(url, KEY, proxy=None)
        await sock.close()
    assert proxy.requests == []


async def test_a_proxy_that_refuses_is_a_service_error_without_its_password(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    async with TunnelProxy(answer=b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n") as proxy:
        no_proxy_env.setenv("HTTP_PROXY", f"http://ops:hunter2@127.0.0.1:{proxy.port}")
        with pytest.raises(RealtimeServiceError) as refused:
            await connect_realtime("ws://127.0.0.1:9/v1/realtime?model=m", KEY)
    message = str(refused.value)
    assert "407" in message and "through the proxy http://ops:***@127.0.0.1" in message
    assert "hunter2" not in message
    [head] = proxy.requests  # its credentials went to the proxy, as Basic
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'ops:hunter2').decode()}" in (
        head.decode()
    )


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HTTPS_PROXY": "http://proxy.example:3128"},
        {"HTTP_PROXY": "http://proxy.example:3128"},  # ws only
        {"https_proxy": "https://user:pw@proxy.example"},
        {"HTTPS_PROXY": "http://a.example:1", "WSS_PROXY": "http://b.example:2"},
        {"HTTPS_PROXY": "http://a.example:1", "WS_PROXY": "http://b.example:2"},
        {"SOCKS_PROXY": "socks5h://s.example:1080", "HTTPS_PROXY": "http://a.example:1"},
        {"SOCKS_PROXY": "socks4://s.example:1080"},
        {"HTTPS_PROXY": "http://a.example:1", "NO_PROXY": "api.openai.com"},
        {"HTTPS_PROXY": "http://a.example:1", "NO_PROXY": ".openai.com"},
        {"HTTPS_PROXY": "http://a.example:1", "NO_PROXY": "*"},
        {"HTTPS_PROXY": "http://a.example:1", "NO_PROXY": "gateway.example"},
    ],
)
@pytest.mark.parametrize(
    "url", ["wss://api.openai.com/v1/realtime?model=m", "ws://gateway.example:8080/v1/realtime"]
)
def test_the_proxy_is_websockets_choice(
    env: dict[str, str], url: str, no_proxy_env: pytest.MonkeyPatch
) -> None:
    from websockets.uri import get_proxy, parse_uri

    for name, value in env.items():
        no_proxy_env.setenv(name, value)
    theirs = get_proxy(parse_uri(url))
    ours = realtime_connect.environment_proxy(url)
    if theirs is None:
        assert ours is None
    else:  # the same proxy, in picows' names (socks5h is its socks5) and with its port
        assert ours is not None
        scheme, rest = theirs.split("://", 1)
        wanted = {"socks5h": "socks5"}.get(scheme, scheme) + "://" + rest.rstrip("/")
        if ":" not in rest.rsplit("@", 1)[-1]:
            wanted += ":443" if scheme == "https" else ":80"
        assert ours == wanted


@pytest.mark.parametrize("value", ["socks5://s.example:1080", "socks://s.example:1080/"])
def test_all_proxy_is_not_read_as_websockets_does_not(
    value: str, no_proxy_env: pytest.MonkeyPatch
) -> None:
    # A value the SDK never read (socks:// is no scheme picows knows) fails no call.
    no_proxy_env.setenv("ALL_PROXY", value)
    assert realtime_connect.environment_proxy("wss://api.openai.com/v1/realtime") is None


@pytest.mark.parametrize("value", ["ftp://ops:hunter2@proxy.example:21", "proxy.example:3128"])
async def test_a_proxy_variable_that_is_no_proxy_url_is_a_config_error(
    value: str, no_proxy_env: pytest.MonkeyPatch
) -> None:
    no_proxy_env.setenv("HTTPS_PROXY", value)
    with pytest.raises(ConfigError) as bad:
        await connect_realtime("wss://api.openai.com/v1/realtime?model=m", KEY)
    assert "HTTPS_PROXY" in str(bad.value)
    assert "hunter2" not in str(bad.value) and "proxy.example" not in str(bad.value)
