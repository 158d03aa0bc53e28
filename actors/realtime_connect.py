"""Open the OpenAI Realtime WebSocket as openai-python 3.57 does, without importing it.

The SDK costs ~29 MB of memory per actor process only to open this socket;
the call shell already builds and parses every event's JSON itself. What the
SDK does (``openai/resources/realtime/realtime.py``, shared/protocols.md §4.1-4.2):

- URL: ``websocket_base_url``, else ``base_url`` with http -> ws and
  https -> wss, then ``/realtime`` appended to the path and ``model=...``
  added to the query (``realtime_url``);
- headers: ``Authorization: Bearer <key>``, ``Accept`` and ``Content-Type``
  ``application/json``, ``User-Agent: AsyncOpenAI/Python <version>`` and the
  ``X-Stainless-*`` platform headers (``realtime_headers``); no subprotocol,
  no compression;
- redirects only to the same origin: here none are followed, so the key
  never goes to another host;
- the proxy: ``websockets``' ``connect`` (the SDK's transport) goes through the
  one the environment names for the URL (``environment_proxy``), and so does
  this one, through picows' own proxy support.

The session is open once the service says so: a wrong key is no HTTP 401,
the upgrade goes through and the service refuses the session in-band, with an
``error`` event (``invalid_api_key``) and a close 3000
``invalid_request_error.invalid_api_key`` (sim/realtime/auth.py has the
sources). So ``connect_realtime`` reads the first event within the open
timeout: ``session.created`` stays queued for the caller (``SessionSocket``);
an ``error`` (or a close) first is a ``RealtimeServiceError`` naming the cause
and carrying the close, and a call is not dialed on it. Anything that stops
the session from opening is a ``RealtimeServiceError`` whose message never
holds the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import ssl
import urllib.request
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from picows import WSError, WSHandshakeError, WSInvalidStatusError, WSInvalidURL, ws_connect
from python_socks import ProxyError  # picows' SOCKS and CONNECT failures

from actors.picows_sockets import KEEPALIVE_S, PicowsSocket, keepalive
from switchboard.call_policy import FATAL_REALTIME_CODES, refusal_cause
from switchboard.errors import ConfigError, RealtimeServiceError, SocketClosed
from switchboard.realtime_events import RealtimeErrorReported
from switchboard.realtime_parser import parse_server_event
from switchboard.settings import redact_url

__all__ = [
    "DEFAULT_BASE_URL",
    "OPEN_TIMEOUT_S",
    "REALTIME_MAX_MESSAGE",
    "SDK_VERSION",
    "SessionSocket",
    "connect_realtime",
    "environment_proxy",
    "realtime_headers",
    "realtime_url",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SDK_VERSION = "3.57.0"  # the openai-python release whose handshake this reproduces
OPEN_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 0.5  # after a refusal's error event, for the close that follows it at once
# The SDK sets no limit; session and response events carry instructions and transcripts.
REALTIME_MAX_MESSAGE = 16 * 2**20
_WS_SCHEME = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_OS = {"linux": "Linux", "darwin": "MacOS", "windows": "Windows", "freebsd": "FreeBSD"}
_ARCH = {"x86_64": "x64", "amd64": "x64", "arm64": "arm64", "aarch64": "arm64", "arm": "arm"}
# Which of ``urllib.request.getproxies()`` a URL goes through, in websockets 15's order
# (``websockets.uri.get_proxy``). Not ALL_PROXY, which websockets skips too: a value
# there the SDK never read (``socks://``, say) must not start failing every call.
_PROXY_KEYS = {
    "wss": ("wss", "socks", "https"),
    "ws": ("ws", "socks", "https", "http"),
}
# websockets' proxy schemes in picows' (python-socks') names. Its SOCKS5 has the proxy
# resolve the host (socks5h); its SOCKS4 resolves it here (socks4a's remote lookup is lost).
_PROXY_SCHEMES = {
    "http": "http",
    "https": "https",
    "socks5h": "socks5",
    "socks5": "socks5",
    "socks4a": "socks4",
    "socks4": "socks4",
}


def realtime_url(base_url: str | None, model: str) -> str:
    """The URL the SDK dials for ``connect(model=model)``; ``None`` is the SDK's default base.

    An ``http(s)`` base is the SDK's ``base_url``; a ``ws(s)`` one its ``websocket_base_url``.
    """
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    scheme = _WS_SCHEME.get(parts.scheme)
    if scheme is None or not parts.netloc:
        shown = redact_url(base_url or DEFAULT_BASE_URL)
        raise ConfigError(f"the OpenAI base URL {shown!r} is not an http(s) or ws(s) URL")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "model"]
    query.append(("model", model))
    path = parts.path.rstrip("/") + "/realtime"
    return urlunsplit((scheme, parts.netloc, path, urlencode(query, quote_via=quote), ""))


def realtime_headers(
    api_key: str, *, organization: str | None = None, project: str | None = None
) -> list[tuple[str, str]]:
    """The upgrade request's headers, in the SDK's order (after Host, Upgrade, Sec-WebSocket-*)."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    headers = [
        ("Authorization", f"Bearer {api_key}"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("User-Agent", f"AsyncOpenAI/Python {SDK_VERSION}"),
        ("X-Stainless-Lang", "python"),
        ("X-Stainless-Package-Version", SDK_VERSION),
        ("X-Stainless-OS", _OS.get(system, f"Other:{platform.platform().lower()}")),
        ("X-Stainless-Arch", _ARCH.get(machine, f"other:{machine}")),
        ("X-Stainless-Runtime", platform.python_implementation()),
        ("X-Stainless-Runtime-Version", platform.python_version()),
        ("X-Stainless-Async", "async:asyncio"),
    ]
    if organization is not None:
        headers.append(("OpenAI-Organization", organization))
    if project is not None:
        headers.append(("OpenAI-Project", project))
    return headers


def environment_proxy(url: str) -> str | None:
    """The proxy the SDK would open ``url`` through, as picows takes it; None: direct.

    As ``websockets``' ``get_proxy``: ``NO_PROXY`` first, then ``WSS_PROXY`` (``WS_PROXY``
    for ``ws``), ``SOCKS_PROXY`` (an ``http://`` one meaning ``socks5h://``),
    ``HTTPS_PROXY``, and ``HTTP_PROXY`` for ``ws`` only (not ``ALL_PROXY``). A value
    that is no proxy URL is a ``ConfigError`` naming its variable, not its value
    (it may hold a password).
    """
    parts = urlsplit(url)
    keys = _PROXY_KEYS.get(parts.scheme)
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        return None  # not a URL to connect to: ws_connect says so
    if keys is None or not parts.hostname:
        return None
    if urllib.request.proxy_bypass(f"{parts.hostname}:{port}"):
        return None
    proxies = urllib.request.getproxies()
    for key in keys:
        proxy = proxies.get(key)
        if proxy is not None:
            if key == "socks" and proxy.startswith("http://"):
                proxy = "socks5h://" + proxy[len("http://") :]
            return _picows_proxy(proxy, f"{key.upper()}_PROXY")
    return None


def _picows_proxy(proxy: str, variable: str) -> str:
    parts = urlsplit(proxy)
    scheme = _PROXY_SCHEMES.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        scheme = None  # a port that is not a number
    if scheme is None or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"the proxy in {variable} is not a proxy URL "
            "(http://, https://, socks5:// or socks4://host:port)"
        )
    netloc = parts.netloc
    if port is None:  # websockets' default; python-socks wants one said
        netloc += ":443" if scheme == "https" else ":80"
    return urlunsplit((scheme, netloc, "", "", ""))


class SessionSocket:
    """An open session's socket (a ``TextSocket``): its first ``recv`` is the event
    ``connect_realtime`` read to know the session open (``session.created``)."""

    def __init__(self, socket: PicowsSocket, first: str | bytes) -> None:
        self.socket = socket
        self._first: str | bytes | None = first

    async def send(self, text: str) -> None:
        await self.socket.send(text)

    def try_send(self, text: str) -> bool:
        return self.socket.try_send(text)

    async def recv(self) -> str | bytes:
        first = self._first
        if first is None:
            return await self.socket.recv()
        self._first = None
        return first

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.socket.close(code, reason)

    async def wait_closed(self) -> None:
        await self.socket.wait_closed()


async def connect_realtime(
    url: str,
    api_key: str,
    *,
    organization: str | None = None,
    project: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float = OPEN_TIMEOUT_S,
    proxy: str | Literal[True] | None = True,
    max_message: int = REALTIME_MAX_MESSAGE,
    keepalive_s: float | None = KEEPALIVE_S,
    use_aiofastnet: bool = False,
) -> SessionSocket:
    """Open a Realtime session at ``url`` (``realtime_url``); the first event: ``session.created``.

    ``wss`` URLs use ``ssl_context``, else a default one (system CAs, host
    name checked), as the SDK's ``websockets`` does. Keepalive pings and the
    transports are as in ``serve_media``. The upgrade and the service's first
    event both come within ``open_timeout``. ``proxy``: True (websockets' default)
    for the environment's (``environment_proxy``), None for none, or a proxy URL.
    """
    if not api_key:
        raise ConfigError("an OpenAI API key is needed to open a Realtime session")
    if ssl_context is None and url.startswith("wss:"):
        ssl_context = ssl.create_default_context()
    if proxy is True:
        proxy = environment_proxy(url)
    headers = realtime_headers(api_key, organization=organization, project=project)
    opening = "cannot open the Realtime session at " + redact_url(url)
    if proxy is not None:
        opening += " through the proxy " + redact_url(proxy)
    socket: PicowsSocket | None = None
    opened_session = False
    try:
        async with asyncio.timeout(open_timeout):
            _, opened = await ws_connect(
                lambda: PicowsSocket(max_message),
                url,
                ssl_context=ssl_context,
                websocket_handshake_timeout=open_timeout,
                max_frame_size=max_message,
                extra_headers=headers,
                max_redirects=0,
                proxy=proxy,
                logger_name="realtime",
                use_aiofastnet=use_aiofastnet,
                **keepalive(keepalive_s),
            )
            assert isinstance(opened, PicowsSocket)
            socket = opened
            first = await socket.recv()
        event = parse_server_event(first, max_message)
        if isinstance(event, RealtimeErrorReported):  # refused in-band: its close follows
            raise await _refused(socket, event, opening, api_key)
        opened_session = True
    except WSInvalidURL as exc:
        shown = redact_url(url)  # as settings show URLs: nothing secret
        raise ConfigError(f"the Realtime URL {shown!r} is not a WebSocket URL: {exc}") from exc
    except SocketClosed as closed:  # refused with no event, or dropped
        reason = _scrub(closed.reason, api_key)
        message = f"{opening}: it closed before the session opened ({closed.code}: {reason})"
        raise RealtimeServiceError(message, closed.code, closed.reason) from None
    except (WSError, ProxyError, OSError, TimeoutError) as exc:
        reason = _scrub(_describe(exc, open_timeout), api_key)
        raise RealtimeServiceError(f"{opening}: {reason}") from exc
    finally:
        if socket is not None and not opened_session:  # opened, then refused or given up
            # Not waiting for the answer: a service that stalled (or refused) will not
            # give one, and the caller's open timeout has run out already.
            with contextlib.suppress(Exception):
                await socket.close(1000, "session not opened", timeout_s=0)
    # Anything but an error first (not session.created?) is the bridge's to judge.
    assert socket is not None
    return SessionSocket(socket, first)


async def _refused(
    socket: PicowsSocket, error: RealtimeErrorReported, opening: str, api_key: str
) -> RealtimeServiceError:
    """The session was refused with ``error``: wait (a little) for the close the service
    sends after it, whose code and reason tell the policy not to try again, and say why.

    An invalid key's message shows the key's ends: it is left out, our words name the
    cause. Other messages are kept, scrubbed of the key should one quote it.
    """
    with contextlib.suppress(SocketClosed, TimeoutError):
        async with asyncio.timeout(CLOSE_WAIT_S):
            while True:  # nothing but the close is expected
                await socket.recv()
    closed = socket.closed
    code, reason = (None, "") if closed is None else (closed.code, closed.reason)
    name = error.code or error.type
    fatal = error.code in FATAL_REALTIME_CODES
    cause = refusal_cause(name) if fatal else error.message or name
    detail = name if code is None else f"{name}; closed {code}: {reason}"
    message = f"{opening}: the service refused the session: {cause} ({detail})"
    return RealtimeServiceError(_scrub(message, api_key), code, reason)


def _describe(exc: BaseException, open_timeout: float) -> str:
    if isinstance(exc, WSInvalidStatusError) and exc.response is not None:
        status = exc.response.status
        detail = _error_message(exc.raw_body or b"")
        return f"HTTP {status.value} {status.phrase}" + (f": {detail}" if detail else "")
    if isinstance(exc, WSHandshakeError):
        return f"bad handshake: {exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {open_timeout:g} s"
    return f"{type(exc).__name__}: {exc}"


def _error_message(body: bytes) -> str:
    """OpenAI's ``{"error": {"message": ...}}``, else the body's first line."""
    text = body.decode(errors="replace").strip()
    try:
        error = json.loads(text)["error"]
        return str(error.get("message") or error.get("code") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return text.splitlines()[0][:200] if text else ""


def _scrub(text: str, secret: str) -> str:
    # A too-short "key" would blank out ordinary words; real keys are long.
    return text.replace(secret, "<api key>") if len(secret) >= 6 else text
