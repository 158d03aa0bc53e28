"""Media Streams messages as Twilio's side writes and reads them (protocols.md 1.2, 1.3).

``StreamWriter`` renders the phone's messages with the exact field types:
``sequenceNumber``/``chunk``/``timestamp`` as strings, ``sampleRate`` and
``channels`` as numbers, ``connected`` without sequence number or stream
sid, ``sequenceNumber`` ``"1"`` on ``start`` and +1 on every later message.

``parse_server_message(text)`` turns a frame from the server into a typed
message: ``AudioReceived``, ``MarkReceived``, ``ClearReceived`` or
``Rejected`` (bad JSON, unknown event, bad base64, ...). Media without a
payload and marks without a name are ``Ignored``, as Twilio ignores them.
``stream_sid_problem(message, expected)`` names what is wrong with a played
message's ``streamSid``: absent, or not the one ``start`` gave (1.3, 1.4).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

__all__ = [
    "AudioReceived",
    "ClearReceived",
    "Ignored",
    "MarkReceived",
    "Rejected",
    "ServerMessage",
    "StreamWriter",
    "parse_server_message",
    "stream_sid_problem",
]


class StreamWriter:
    """Renders one stream's outbound messages, counting sequence numbers and chunks."""

    def __init__(self, stream_sid: str, account_sid: str, call_sid: str) -> None:
        self.stream_sid = stream_sid
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.sequence = 0  # last sequenceNumber sent
        self.chunk = 0  # last media chunk sent

    def _next(self) -> int:
        self.sequence += 1
        return self.sequence

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str]) -> str:
        seq = self._next()
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": str(seq),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {str(k): str(v) for k, v in custom_parameters.items()},
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        seq = self._next()
        self.chunk += 1
        b64 = base64.b64encode(payload).decode("ascii")
        # Hand-rendered: the hot path (50 frames/s per call); every value is a
        # digit string, base64 or a hex sid, so nothing needs escaping.
        return (
            f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound",'
            f'"chunk":"{self.chunk}","timestamp":"{timestamp_ms}","payload":"{b64}"}},'
            f'"streamSid":"{self.stream_sid}"}}'
        )

    def dtmf(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(self._next()),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": str(self._next()),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(self._next()),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )


@dataclass(frozen=True, slots=True)
class AudioReceived:
    payload: bytes
    stream_sid: str | None


@dataclass(frozen=True, slots=True)
class MarkReceived:
    name: str
    stream_sid: str | None


@dataclass(frozen=True, slots=True)
class ClearReceived:
    stream_sid: str | None


@dataclass(frozen=True, slots=True)
class Ignored:
    event: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    message: str


ServerMessage = AudioReceived | MarkReceived | ClearReceived | Ignored | Rejected


def parse_server_message(text: str | bytes) -> tuple[ServerMessage, dict[str, object] | None]:
    """Parse one frame; also return the decoded JSON object (for the record), if any."""
    if isinstance(text, bytes):
        return Rejected("binary_frame", "Twilio expects JSON text frames, got binary"), None
    try:
        data = json.loads(text)
    except ValueError as exc:
        return Rejected("invalid_json", f"not JSON: {exc}"), None
    if not isinstance(data, dict):
        return Rejected("invalid_json", "a message must be a JSON object"), None
    sid = data.get("streamSid")
    stream_sid = sid if isinstance(sid, str) else None
    match data.get("event"):
        case "media":
            media = data.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str) or not payload:
                return Ignored("media", "media without a payload"), data
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return Rejected("invalid_base64", "media.payload is not base64"), data
            return AudioReceived(audio, stream_sid), data
        case "mark":
            mark = data.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str) or not name:
                return Ignored("mark", "mark without a name"), data
            return MarkReceived(name, stream_sid), data
        case "clear":
            return ClearReceived(stream_sid), data
        case None:
            return Rejected("missing_event", "message has no 'event'"), data
        case other:
            return Rejected("unknown_event", f"unknown event {other!r}"), data


def stream_sid_problem(message: ServerMessage, expected: str) -> tuple[str, str] | None:
    """``(reason, detail)`` if a media/mark/clear does not carry ``expected``, else None.

    Every server -> Twilio message carries the ``streamSid`` from ``start`` (protocols.md
    1.3, 6.3). What Twilio does otherwise is unknown (1.4), so the phone records the
    problem and still acts on the message: a missing sid is treated like a wrong one.
    """
    if not isinstance(message, AudioReceived | MarkReceived | ClearReceived):
        return None
    if message.stream_sid is None:
        return "missing_stream_sid", "message has no string 'streamSid'"
    if message.stream_sid != expected:
        return "stream_sid_mismatch", message.stream_sid
    return None
