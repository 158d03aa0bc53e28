"""A strict, pure parser for one HTTP/1.1 request head (RFC 9112 §2-§5).

Theory of operation: the media edge reads bytes until ``find_head_end`` says the
head is complete, then calls ``parse_request_head`` on exactly those bytes. The
parser never touches a socket or a clock; it either returns a ``RequestHead`` or
raises ``RequestHeadError`` (a ``PeerProtocolError``: the client broke HTTP, we
did not), whatever the input. It is strict where leniency would let two HTTP
implementations disagree about one message (request smuggling): bare LF, bare CR,
obsolete line folding, whitespace before a header's colon and control bytes are
all rejected rather than repaired. It does not read bodies: the edge forwards
everything after the head unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from switchboard.errors import PeerProtocolError

__all__ = [
    "RequestHead",
    "RequestHeadError",
    "find_head_end",
    "parse_request_head",
]

# RFC 9110 §5.6.2 token: method names and header field names.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request-target is visible US-ASCII only (RFC 9112 §3.2); no spaces, no controls.
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
# field-value: VCHAR, SP, HTAB and obs-text; every other control byte is refused.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_OWS = b" \t"


class RequestHeadError(PeerProtocolError):
    """The bytes are not one well-formed HTTP/1.x request head.

    ``reason`` is one of ``incomplete``, ``empty``, ``bare_lf``, ``bare_cr``,
    ``bad_request_line``, ``bad_method``, ``bad_target``, ``bad_version``,
    ``obs_fold``, ``bad_header_name``, ``bad_header_value``.
    """


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request head; header names keep their case, values lose only OWS."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of header ``name`` (case-insensitive), in order."""
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)

    def get(self, name: str) -> str | None:
        """The first value of header ``name``, or None when absent."""
        values = self.get_all(name)
        return values[0] if values else None

    def tokens(self, name: str) -> frozenset[str]:
        """The lower-cased comma-separated tokens of every ``name`` header.

        ``Connection: keep-alive, Upgrade`` gives ``{"keep-alive", "upgrade"}``.
        """
        return frozenset(
            token.strip().lower()
            for value in self.get_all(name)
            for token in value.split(",")
            if token.strip()
        )


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int | None:
    """The index just past the blank line ending the head, or None if not there yet.

    ``start`` lets a caller resume scanning where the previous call stopped (less
    three bytes, since a terminator may straddle two reads). A head terminated by
    bare LFs is reported too, so the parser can refuse it at once instead of the
    connection waiting for a CRLF terminator that will never come.
    """
    crlf = buffer.find(b"\r\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    ends = [i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    return min(ends) if ends else None


def parse_request_head(data: bytes) -> RequestHead:
    """Parse ``data``, which must be exactly one head ending in CRLF CRLF.

    Raises ``RequestHeadError`` for anything else; never any other exception.
    """
    if not data.endswith(b"\r\n\r\n"):
        raise RequestHeadError("incomplete", "request head does not end with CRLF CRLF")
    lines = data[:-4].split(b"\r\n")
    for line in lines:
        if b"\n" in line:
            raise RequestHeadError("bare_lf", "line ends with a bare LF")
        if b"\r" in line:
            raise RequestHeadError("bare_cr", "bare CR inside a line")
    if not lines[0]:
        raise RequestHeadError("empty", "no request line")
    method, target, version = _request_line(lines[0])
    headers = tuple(_header_field(line) for line in lines[1:])
    return RequestHead(method=method, target=target, version=version, headers=headers)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise RequestHeadError("bad_request_line", "request line is not 'METHOD target VERSION'")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise RequestHeadError("bad_method", "method is not a token")
    if not _TARGET.fullmatch(target):
        raise RequestHeadError("bad_target", "request target has forbidden bytes")
    if not _VERSION.fullmatch(version):
        raise RequestHeadError("bad_version", "version is not HTTP/d.d")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def _header_field(line: bytes) -> tuple[str, str]:
    if line[:1] in (b" ", b"\t"):
        raise RequestHeadError("obs_fold", "obsolete line folding is not accepted")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        # Also catches "Name : value", which RFC 9112 §5.1 says to reject.
        raise RequestHeadError("bad_header_name", "header line has no valid field name")
    value = value.strip(_OWS)
    if not _FIELD_VALUE.fullmatch(value):
        raise RequestHeadError("bad_header_value", "header value has control bytes")
    # latin-1 maps every byte to one code point, so obs-text survives unchanged.
    return name.decode("ascii"), value.decode("latin-1")
