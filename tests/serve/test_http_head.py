"""The pure request-head parser and the edge's routing policy, table-driven."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.control import media_url
from serve.http_head import RequestHead, RequestHeadError, find_head_end, parse_request_head
from serve.media_route import (
    Refuse,
    ToDefault,
    ToMedia,
    forwarded_head,
    refusal_response,
    route_request,
)
from switchboard.errors import PeerProtocolError

UPGRADE = (
    b"GET /media/CA0123456789abcdef0123456789abcdef HTTP/1.1\r\n"
    b"Host: calls.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Twilio-Signature: +9vaX1RSN4cZfgud/T6W/NCbhLo=\r\n"
    b"\r\n"
)


def head(text: str) -> RequestHead:
    return parse_request_head(text.replace("\n", "\r\n").encode("latin-1") + b"\r\n")


# -- parser: valid heads -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "method", "target", "version", "headers"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "GET", "/", "HTTP/1.1", ()),
        (
            b"POST /calls?x=1 HTTP/1.0\r\nContent-Length: 2\r\n\r\n",
            "POST",
            "/calls?x=1",
            "HTTP/1.0",
            (("Content-Length", "2"),),
        ),
        # OWS around values goes; case and order of names stay; empty values are fine.
        (
            b"GET /a HTTP/1.1\r\nhOsT:  \t example.com \t\r\nX-Empty:\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
            "GET",
            "/a",
            "HTTP/1.1",
            (("hOsT", "example.com"), ("X-Empty", ""), ("X-A", "1"), ("x-a", "2")),
        ),
        # obs-text survives byte for byte; inner spaces and tabs are kept.
        (
            b"GET * HTTP/1.1\r\nX-Name: caf\xe9 au\tlait\r\n\r\n",
            "GET",
            "*",
            "HTTP/1.1",
            (("X-Name", "caf\xe9 au\tlait"),),
        ),
        (b"OPTIONS http://h/p HTTP/2.0\r\n\r\n", "OPTIONS", "http://h/p", "HTTP/2.0", ()),
    ],
)
def test_parses_valid_heads(
    data: bytes,
    method: str,
    target: str,
    version: str,
    headers: tuple[tuple[str, str], ...],
) -> None:
    assert parse_request_head(data) == RequestHead(method, target, version, headers)


def test_header_lookups_are_case_insensitive_and_split_tokens() -> None:
    parsed = head("GET /p?q=secret HTTP/1.1\nConnection: keep-alive, Upgrade\nconnection: ,x,\n")
    assert parsed.path == "/p"
    assert parsed.get("CONNECTION") == "keep-alive, Upgrade"
    assert parsed.get("Missing") is None
    assert parsed.get_all("connection") == ("keep-alive, Upgrade", ",x,")
    assert parsed.tokens("Connection") == {"keep-alive", "upgrade", "x"}


# -- parser: invalid heads -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\n", "incomplete"),
        (b"", "incomplete"),
        (b"\r\n\r\n", "empty"),
        (b"\r\nGET / HTTP/1.1\r\n\r\n", "empty"),
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare_lf"),
        (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "bare_cr"),
        (b"GET /  HTTP/1.1\r\n\r\n", "bad_request_line"),
        (b"GET /\r\n\r\n", "bad_request_line"),
        (b"GET / HTTP/1.1 extra\r\n\r\n", "bad_request_line"),
        (b"G(T / HTTP/1.1\r\n\r\n", "bad_method"),
        (b" / HTTP/1.1\r\n\r\n", "bad_method"),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", "bad_target"),
        (b"GET /caf\xe9 HTTP/1.1\r\n\r\n", "bad_target"),
        (b"GET /\tx HTTP/1.1\r\n\r\n", "bad_target"),
        (b"GET / HTTP/11\r\n\r\n", "bad_version"),
        (b"GET / http/1.1\r\n\r\n", "bad_version"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "obs_fold"),
        (b"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", "obs_fold"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "bad_header_name"),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", "bad_header_name"),
        (b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n", "bad_header_name"),
        (b"GET / HTTP/1.1\r\nX(y): 1\r\n\r\n", "bad_header_name"),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "bad_header_value"),
        (b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n", "bad_header_value"),
        (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", "bad_header_value"),  # DEL: a control too
    ],
)
def test_rejects_invalid_heads_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RequestHeadError) as info:
        parse_request_head(data)
    assert info.value.reason == reason
    assert isinstance(info.value, PeerProtocolError)


@given(st.binary(max_size=300))
def test_parser_raises_nothing_but_its_own_error(data: bytes) -> None:
    for candidate in (data, data + b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n"):
        try:
            parsed = parse_request_head(candidate)
        except RequestHeadError:
            continue
        assert isinstance(parsed, RequestHead)


@given(st.lists(st.sampled_from(["GET", " ", "/", "\r\n", ":", "a", "\n", "HTTP/1.1", "\t"])))
def test_parser_on_near_miss_heads(pieces: list[str]) -> None:
    data = "".join(pieces).encode() + b"\r\n\r\n"
    with contextlib.suppress(RequestHeadError):
        parse_request_head(data)


@pytest.mark.parametrize(
    ("buffer", "start", "end"),
    [
        (b"GET / HTTP/1.1\r\n", 0, None),
        (b"GET / HTTP/1.1\r\n\r\nbody", 0, 18),
        (b"GET / HTTP/1.1\r\n\r\nbody", 14, 18),
        (b"GET / HTTP/1.1\n\nbody", 0, 16),
        (b"GET / HTTP/1.1\r\nA: b\n\nx\r\n\r\n", 0, 22),
    ],
)
def test_find_head_end(buffer: bytes, start: int, end: int | None) -> None:
    assert find_head_end(buffer, start) == end


# -- routing -------------------------------------------------------------------

WS = (
    "Upgrade: websocket\nConnection: Upgrade\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n"
    "X-Twilio-Signature: s\n"
)


@pytest.mark.parametrize(
    ("text", "route"),
    [
        (f"GET /media/CA42 HTTP/1.1\nHost: h\n{WS}", ToMedia("CA42")),
        (f"GET /media/CA42?token=s HTTP/1.1\nHost: h\n{WS}", ToMedia("CA42")),
        (
            "GET /media/a_b-C HTTP/1.1\nHost: h\n"
            "upgrade: WebSocket\nconnection: keep-alive, upgrade\n"
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\nsec-websocket-version: 13\n"
            "x-twilio-signature: s\n",
            ToMedia("a_b-C"),
        ),
        # Not a media upgrade: all of these belong to Serve.
        ("GET /media/CA42 HTTP/1.1\nHost: h\n", ToDefault()),
        (f"POST /media/CA42 HTTP/1.1\nHost: h\n{WS}", ToDefault()),
        ("GET /media/CA42 HTTP/1.1\nHost: h\nUpgrade: h2c\nConnection: Upgrade\n", ToDefault()),
        ("GET /media/CA42 HTTP/1.1\nHost: h\nUpgrade: websocket\n", ToDefault()),
        (f"GET /ws/console HTTP/1.1\nHost: h\n{WS}", ToDefault()),
        (f"GET /mediaX/CA42 HTTP/1.1\nHost: h\n{WS}", ToDefault()),
        (f"GET http://h/media/CA42 HTTP/1.1\nHost: h\n{WS}", ToDefault()),
        ("POST /calls HTTP/1.1\nHost: h\nContent-Length: 0\n", ToDefault()),
        # Media upgrades the edge refuses.
        (f"GET /media/CA42 HTTP/1.0\nHost: h\n{WS}", Refuse(400, "bad_version")),
        (f"GET /media/CA42 HTTP/1.1\n{WS}", Refuse(400, "bad_host")),
        (f"GET /media/CA42 HTTP/1.1\nHost: h\nHost: i\n{WS}", Refuse(400, "bad_host")),
        (
            f"GET /media/CA42 HTTP/1.1\nHost: h\nContent-Length: 5\n{WS}",
            Refuse(400, "body_on_upgrade"),
        ),
        (
            f"GET /media/CA42 HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n{WS}",
            Refuse(400, "body_on_upgrade"),
        ),
        (f"GET /media/ HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
        (f"GET /media/CA42/x HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
        (f"GET /media/CA%34 HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
        (f"GET /media/{'a' * 65} HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
        # Only the call-id alphabet: no dot segments, nothing a resolver might normalise.
        (f"GET /media/CA.42 HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
        (f"GET /media/.. HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
        (f"GET /media/CA~42 HTTP/1.1\nHost: h\n{WS}", Refuse(404, "bad_call_id")),
    ],
)
def test_route_request(text: str, route: object) -> None:
    assert route_request(head(text), "/media/") == route


@pytest.mark.parametrize(
    ("public_url", "url"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/media/CA42"),
        ("https://calls.example.com/", "wss://calls.example.com/media/CA42"),
    ],
)
def test_the_media_url_for_public_url_is_ws_or_wss_and_routes_to_its_call(
    public_url: str, url: str
) -> None:
    # What Twilio (or a web call) is told to open: wss behind https, as Twilio requires.
    assert media_url(public_url, "CA42") == url
    path = "/" + url.split("://", 1)[1].partition("/")[2]
    assert route_request(head(f"GET {path} HTTP/1.1\nHost: h\n{WS}"), "/media/") == ToMedia("CA42")


def test_content_length_zero_is_not_a_body() -> None:
    text = f"GET /media/CA42 HTTP/1.1\nHost: h\nContent-Length: 0\n{WS}"
    assert route_request(head(text), "/media/") == ToMedia("CA42")


def test_forwarded_head_appends_only_what_is_missing() -> None:
    parsed = parse_request_head(UPGRADE)
    out = forwarded_head(UPGRADE, parsed, client_ip="10.0.0.7", proto="https")
    assert out == UPGRADE[:-2] + (
        b"X-Forwarded-For: 10.0.0.7\r\n"
        b"X-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: calls.example.com\r\n"
        b"\r\n"
    )
    assert parse_request_head(out).headers[: len(parsed.headers)] == parsed.headers

    tunnel = UPGRADE[:-2] + b"x-forwarded-proto: https\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    out = forwarded_head(tunnel, parse_request_head(tunnel), client_ip="127.0.0.1", proto="http")
    assert out == tunnel[:-2] + b"X-Forwarded-Host: calls.example.com\r\n\r\n"

    complete = tunnel[:-2] + b"X-Forwarded-Host: other\r\n\r\n"
    parsed = parse_request_head(complete)
    assert forwarded_head(complete, parsed, client_ip="127.0.0.1", proto="http") == complete


def test_forwarded_head_without_client_ip_or_host() -> None:
    raw = b"GET /media/x HTTP/1.1\r\n\r\n"
    out = forwarded_head(raw, parse_request_head(raw), client_ip=None, proto="http")
    assert out == b"GET /media/x HTTP/1.1\r\nX-Forwarded-Proto: http\r\n\r\n"


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(400, "Bad Request"), (404, "Not Found"), (431, "Request Header Fields Too Large")],
)
def test_refusal_response_is_a_complete_closing_response(status: int, phrase: str) -> None:
    data = refusal_response(status)
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.split(b"\r\n")
    assert lines[0] == f"HTTP/1.1 {status} {phrase}".encode()
    assert b"Connection: close" in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert body == phrase.lower().encode() + b"\n"
