"""Where the media edge sends a connection, decided from its request head alone.

Theory of operation: ``route_request`` is the edge's whole policy as a pure
function. A WebSocket upgrade (RFC 6455 §4.1: ``GET``, HTTP/1.1, ``Upgrade:
websocket``, ``Connection: upgrade``) whose path starts with the media prefix
goes ``ToMedia`` — to the actor that owns the call named in the path; anything
else goes ``ToDefault`` (the Serve HTTP proxy), untouched; a media upgrade the
edge cannot accept becomes a ``Refuse`` with the status to answer. That includes
one no actor could accept, refused here so that it costs no call lookup: a
handshake RFC 6455 §4.2.1 refuses (no 16-byte ``Sec-WebSocket-Key``, a
``Sec-WebSocket-Version`` other than 13), and one with no credential at all
(neither an ``X-Twilio-Signature``, which Twilio sends on every stream, protocols.md
1.6, nor a ``token.<token>`` subprotocol, which a web call's browser offers). The
actor still checks the credential itself; the edge only looks for one.
``forwarded_head`` builds the bytes the actor receives: the original head
unchanged (the Twilio signature covers the URL, which the actor rebuilds from
``Host``/``X-Forwarded-*``), plus the ``X-Forwarded-*`` headers a proxy adds
when the client did not send them. ``refusal_response`` renders the answer.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from dataclasses import dataclass

from serve.http_head import RequestHead

__all__ = [
    "CALL_ID",
    "TOKEN_PROTOCOL",
    "WEBSOCKET_VERSION",
    "Refuse",
    "Route",
    "ToDefault",
    "ToMedia",
    "carries_credentials",
    "forwarded_head",
    "is_websocket_upgrade",
    "refusal_response",
    "route_request",
]

# Twilio call SIDs are "CA" + 32 hex; test and emulator ids are looser, so accept
# the URL-safe characters that need no percent-decoding, and bound the length.
CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A web call's browser offers its one-time token as this subprotocol plus the token
# (actors/call_actor.py WEB_TOKEN_PROTOCOL; the console's webcall/session.js).
TOKEN_PROTOCOL = "token."
WEBSOCKET_VERSION = "13"  # the only one there is (RFC 6455 §4.1)

_REASON_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
# Headers an answer with this status carries: the version the client should speak
# (RFC 6455 §4.2.2), and when to try again (the edge's lookups are all in flight).
_STATUS_HEADERS = {
    426: f"Sec-WebSocket-Version: {WEBSOCKET_VERSION}\r\n",
    503: "Retry-After: 1\r\n",
}


@dataclass(frozen=True, slots=True)
class ToMedia:
    """Splice to the actor owning ``call_id``."""

    call_id: str


@dataclass(frozen=True, slots=True)
class ToDefault:
    """Splice the whole connection, head included, to the default upstream."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer ``status`` and close; ``reason`` is the stats/log key."""

    status: int
    reason: str


Route = ToMedia | ToDefault | Refuse


def is_websocket_upgrade(head: RequestHead) -> bool:
    """True for a GET asking to switch to the WebSocket protocol."""
    return (
        head.method == "GET"
        and "websocket" in head.tokens("Upgrade")
        and "upgrade" in head.tokens("Connection")
    )


def route_request(head: RequestHead, media_prefix: str) -> Route:
    """Decide where the connection that opened with ``head`` goes."""
    if not (head.target.startswith(media_prefix) and is_websocket_upgrade(head)):
        return ToDefault()
    if head.version != "HTTP/1.1":
        return Refuse(400, "bad_version")
    if len(head.get_all("Host")) != 1:
        # The actor rebuilds the signed URL from Host; zero or two is ambiguous.
        return Refuse(400, "bad_host")
    if head.get("Transfer-Encoding") is not None or head.get("Content-Length") not in (None, "0"):
        # An upgrade carries no body; one here is a smuggling attempt or a bug.
        return Refuse(400, "body_on_upgrade")
    call_id = head.path[len(media_prefix) :]
    if not CALL_ID.fullmatch(call_id):
        # Checked before the handshake: the Kubernetes liveness probe sends a bare
        # upgrade for call id "!" and expects this 404 (docker/kuberay/rayservice.yaml).
        return Refuse(404, "bad_call_id")
    keys = head.get_all("Sec-WebSocket-Key")
    if len(keys) != 1 or not _is_websocket_key(keys[0]):
        return Refuse(400, "bad_websocket_key")
    versions = head.tokens("Sec-WebSocket-Version")
    if not versions:
        return Refuse(400, "no_websocket_version")
    if versions != {WEBSOCKET_VERSION}:
        return Refuse(426, "bad_websocket_version")
    if not carries_credentials(head):
        return Refuse(403, "no_credentials")
    return ToMedia(call_id)


def carries_credentials(head: RequestHead) -> bool:
    """True when some actor could accept this upgrade: it has a non-empty
    ``X-Twilio-Signature``, or offers a ``token.`` subprotocol in any
    ``Sec-WebSocket-Protocol`` header. Whether either is right is the actor's call."""
    if any(head.get_all("X-Twilio-Signature")):  # the parser strips OWS: "" is blank
        return True
    return any(
        item.strip().startswith(TOKEN_PROTOCOL)
        for value in head.get_all("Sec-WebSocket-Protocol")
        for item in value.split(",")
    )


def _is_websocket_key(value: str) -> bool:
    """RFC 6455 §4.1: base64 of 16 bytes (a nonce), so 24 characters."""
    try:
        return len(b64decode(value.encode("latin-1"), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def forwarded_head(raw: bytes, head: RequestHead, *, client_ip: str | None, proto: str) -> bytes:
    """``raw`` with X-Forwarded-For/-Proto/-Host appended where ``head`` lacks them.

    ``raw`` must be the exact bytes ``head`` was parsed from (ending CRLF CRLF);
    every original byte is kept, so Host and the signature reach the actor intact.
    """
    added = []
    if client_ip is not None and head.get("X-Forwarded-For") is None:
        added.append(f"X-Forwarded-For: {client_ip}\r\n")
    if head.get("X-Forwarded-Proto") is None:
        added.append(f"X-Forwarded-Proto: {proto}\r\n")
    host = head.get("Host")
    if host is not None and head.get("X-Forwarded-Host") is None:
        added.append(f"X-Forwarded-Host: {host}\r\n")
    if not added:
        return raw
    # The parser guarantees host has no CR/LF, so nothing can be injected here.
    return raw[:-2] + "".join(added).encode("latin-1") + b"\r\n"


def closing_head(raw: bytes, head: RequestHead) -> bytes:
    """``raw`` asking the default upstream to close the connection after its answer,
    unless it is an upgrade (a WebSocket to Serve keeps the connection for itself).

    The edge routes a connection once, by its first head. A tunnel or balancer that keeps
    connections to the edge open could send a media upgrade on one that went to Serve,
    which has no media route: closed after each answer, every request starts afresh.
    """
    if head.get("Upgrade") is not None:
        return raw
    lines = raw[:-4].split(b"\r\n")  # the parser guarantees CRLF lines, no folding
    kept = [lines[0]] + [
        line
        for line in lines[1:]
        if line.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


def refusal_response(status: int) -> bytes:
    """A complete ``Connection: close`` response with a one-line text body; a 426
    names the WebSocket version spoken here, a 503 says to retry in a second."""
    phrase = _REASON_PHRASES.get(status, "Error")
    body = f"{phrase.lower()}\n".encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\n"
        + _STATUS_HEADERS.get(status, "")
        + "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii") + body
