"""What a media upgrade must carry before the edge spends a lookup on it, table-driven.

Nothing legitimate may be refused: Twilio's stream (a signature, protocols.md 1.6), a
web call's browser (its token as subprotocol ``token.<token>``, webcall/session.js) and
the Kubernetes liveness probe (a bare upgrade for call id ``!``, answered 404).
"""

from __future__ import annotations

import pytest
from websockets.client import ClientProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from serve.http_head import RequestHead, parse_request_head
from serve.media_route import Refuse, ToMedia, carries_credentials, refusal_response, route_request

KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n"
VERSION = "Sec-WebSocket-Version: 13\n"
WS = "Upgrade: websocket\nConnection: Upgrade\n" + KEY + VERSION
SIGNED = "X-Twilio-Signature: +9vaX1RSN4cZfgud/T6W/NCbhLo=\n"
START = "GET /media/CA42 HTTP/1.1\nHost: h\n"


def head(text: str) -> RequestHead:
    return parse_request_head(text.replace("\n", "\r\n").encode("latin-1") + b"\r\n")


def client_head(subprotocols: list[str], headers: dict[str, str]) -> RequestHead:
    """The head a real WebSocket client (python-websockets) sends."""
    protocol = ClientProtocol(
        parse_uri("wss://calls.example.com/media/CA42"),
        subprotocols=[Subprotocol(p) for p in subprotocols],
    )
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    protocol.send_request(request)
    (data,) = protocol.data_to_send()
    return parse_request_head(data)


@pytest.mark.parametrize(
    "text",
    [
        START + WS + SIGNED,  # Twilio's stream
        START + WS + "Sec-WebSocket-Protocol: token.abc\n",  # a web call
        START + WS + "Sec-WebSocket-Protocol: chat, token.abc\n",
        START + WS + "Sec-WebSocket-Protocol: chat\nSec-WebSocket-Protocol: token.abc\n",
        START + WS + "sec-websocket-protocol:  token.abc  \n",
        # A browser's own handshake, as Chrome sends it for webcall/session.js.
        START
        + "Connection: Upgrade\nPragma: no-cache\nCache-Control: no-cache\n"
        + "Upgrade: websocket\nOrigin: https://h\nSec-WebSocket-Version: 13\n"
        + "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\n"
        + "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\n"
        + "Sec-WebSocket-Protocol: token.Zm9vYmFy-_\n",
        START + "upgrade: websocket\nconnection: keep-alive, upgrade\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\nsec-websocket-version: 13\n"
        "x-twilio-signature: s\n",
    ],
)
def test_what_twilio_and_browsers_send_is_routed_to_the_call(text: str) -> None:
    assert route_request(head(text), "/media/") == ToMedia("CA42")


@pytest.mark.parametrize(
    ("subprotocols", "headers"),
    [([], {"X-Twilio-Signature": "+9vaX1RSN4cZfgud/T6W/NCbhLo="}), (["token.abc"], {})],
)
def test_a_real_clients_handshake_is_routed_to_the_call(
    subprotocols: list[str], headers: dict[str, str]
) -> None:
    assert route_request(client_head(subprotocols, headers), "/media/") == ToMedia("CA42")


@pytest.mark.parametrize(
    ("text", "route"),
    [
        # No credential some actor could accept: refused without a lookup.
        (START + WS, Refuse(403, "no_credentials")),
        (START + WS + "X-Twilio-Signature: \n", Refuse(403, "no_credentials")),
        (START + WS + "Sec-WebSocket-Protocol: bearer.abc\n", Refuse(403, "no_credentials")),
        (START + WS + "Sec-WebSocket-Protocol: chat, xtoken.a\n", Refuse(403, "no_credentials")),
        (START + WS + "Authorization: Bearer abc\n", Refuse(403, "no_credentials")),
        (
            "GET /media/CA42?token=abc HTTP/1.1\nHost: h\n" + WS,
            Refuse(403, "no_credentials"),
        ),
        # RFC 6455 §4.2.1: a handshake no WebSocket server accepts.
        (START + WS.replace(KEY, "") + SIGNED, Refuse(400, "bad_websocket_key")),
        (START + WS + KEY + SIGNED, Refuse(400, "bad_websocket_key")),  # two
        (
            START + WS.replace(KEY, "Sec-WebSocket-Key: not a nonce\n") + SIGNED,
            Refuse(400, "bad_websocket_key"),
        ),
        (  # base64, but of 15 bytes
            START + WS.replace(KEY, "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\n") + SIGNED,
            Refuse(400, "bad_websocket_key"),
        ),
        (START + WS.replace(VERSION, "") + SIGNED, Refuse(400, "no_websocket_version")),
        (
            START + WS.replace(VERSION, "Sec-WebSocket-Version: 8\n") + SIGNED,
            Refuse(426, "bad_websocket_version"),
        ),
        (
            START + WS.replace(VERSION, "Sec-WebSocket-Version: 13, 8\n") + SIGNED,
            Refuse(426, "bad_websocket_version"),
        ),
        # The liveness probe (docker/kuberay/rayservice.yaml): no key, no version, no
        # credential, and still the 404 it waits for, since the call id is checked first.
        (
            "GET /media/! HTTP/1.1\nHost: probe\nUpgrade: websocket\nConnection: Upgrade\n",
            Refuse(404, "bad_call_id"),
        ),
    ],
)
def test_an_upgrade_no_actor_could_accept_is_refused(text: str, route: Refuse) -> None:
    assert route_request(head(text), "/media/") == route


def test_credentials_are_only_looked_for_not_checked() -> None:
    # Whether the signature or token is right is the actor's call (and its timeline's).
    assert carries_credentials(head(START + "X-Twilio-Signature: forged\n"))
    assert carries_credentials(head(START + "Sec-WebSocket-Protocol: token.wrong\n"))
    assert not carries_credentials(head(START))


@pytest.mark.parametrize(
    ("status", "status_line", "header"),
    [
        (403, b"HTTP/1.1 403 Forbidden", None),
        (426, b"HTTP/1.1 426 Upgrade Required", b"Sec-WebSocket-Version: 13"),
        (503, b"HTTP/1.1 503 Service Unavailable", b"Retry-After: 1"),
    ],
)
def test_refusals_carry_what_their_status_promises(
    status: int, status_line: bytes, header: bytes | None
) -> None:
    response = refusal_response(status)
    lines = response.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert lines[0] == status_line
    assert b"Connection: close" in lines
    extra = [line for line in lines[1:] if not line.startswith((b"Content-", b"Connection"))]
    assert extra == ([] if header is None else [header])
