"""Sans-I/O core of one Twilio Media Streams WebSocket (protocols.md 1.1-1.3, 6.1, 6.2, 6.14).

Theory of operation
-------------------
The shell feeds every WebSocket frame to ``receive(text, now)`` and gets typed
events back (``switchboard.twilio_events``); it sends whatever
``data_to_send()`` returns, in order. Nothing here touches a socket or a clock:
``now`` is seconds on the shell's monotonic clock, used only to time playback.

Inbound: a frame is parsed once, with orjson, and checked to the field:
``sequenceNumber``, ``chunk`` and ``timestamp`` are decimal strings (1.2, 6.14),
``media.payload`` must be strict base64, every message after ``start`` carries
the ``start`` streamSid, and nothing may follow ``stop``. A frame that breaks
the protocol never raises: it becomes one ``TwilioMessageRejected`` whose
error names the fault (reasons: ``binary_frame``, ``message_too_large``,
``invalid_json``, ``not_an_object``, ``missing_field``, ``invalid_field``,
``unknown_event``, ``out_of_order``, ``before_start``, ``after_stop``,
``stream_sid_mismatch``). Sequence gaps are tolerated and counted.

Outbound (1.3): ``send_audio`` queues a ``media`` message and, by default, a
uniquely named ``mark`` after it; ``clear`` queues ``clear``. A
``PlaybackTracker`` pins each mark to a byte offset of its item, so a mark's
echo becomes ``MarkPlayed`` followed by ``PlaybackAcknowledged``, while marks
sent back by a ``clear`` become ``MarkPlayed(flushed=True)`` only (6.2).
``played_bytes(item_id, now)`` is the offset to truncate an interrupted item
at (6.1). Asking to send before ``start`` or after ``stop`` raises
``LocalProtocolError``: that is our bug, not Twilio's.
"""

from __future__ import annotations

from binascii import a2b_base64, b2a_base64

import orjson

from switchboard.errors import LocalProtocolError, TwilioProtocolError
from switchboard.playback import PlaybackTracker
from switchboard.twilio_events import (
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    MediaFormat,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
    TwilioMessageRejected,
)

__all__ = ["TwilioStream"]

DTMF_KEYS = "0123456789*#ABCD"  # a phone keypad (A-D: the military extension)

_RAW_PREFIX_CHARS = 80
# Twilio's counters stay far below this; longer digit strings are garbage.
_MAX_DECIMAL_DIGITS = 18
_Object = dict[str, object]


class TwilioStream:
    """One Media Streams connection: ``receive`` frames, ``send_*``, drain ``data_to_send``."""

    def __init__(self, *, max_message_bytes: int = 65536, mark_prefix: str = "sb") -> None:
        self.max_message_bytes = max_message_bytes
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.account_sid: str | None = None
        self.media_format: MediaFormat | None = None
        self.custom_parameters: dict[str, str] = {}
        self.connected = False
        self.started = False
        self.stopped = False
        self.messages_received = 0
        self.sequence_gaps = 0
        self.rejected_count = 0
        self._last_sequence = 0
        self._tracker = PlaybackTracker()
        self._outgoing: list[str] = []
        self._mark_prefix = f"{mark_prefix}:"
        # JSON-escaped once: '"sb:' so a generated name only needs its counter.
        self._mark_name_head = orjson.dumps(self._mark_prefix).decode()[:-1]
        self._mark_count = 0
        self._media_head = ""
        self._mark_head = ""
        self._clear_message = ""

    # -- inbound ---------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> list[TwilioEvent]:
        """Parse one WebSocket frame; never raises on bad input."""
        self.messages_received += 1
        try:
            return self._receive(text, now)
        except TwilioProtocolError as exc:
            self.rejected_count += 1
            if isinstance(text, str):
                prefix = text[:_RAW_PREFIX_CHARS]
            else:
                prefix = text[:_RAW_PREFIX_CHARS].decode("utf-8", "backslashreplace")
            return [TwilioMessageRejected(exc, prefix)]

    def _receive(self, text: str | bytes, now: float) -> list[TwilioEvent]:
        if not isinstance(text, str):
            raise TwilioProtocolError(
                "binary_frame", f"binary frame of {len(text)} bytes; Twilio sends JSON text"
            )
        # A str of n chars is at most 4n UTF-8 bytes: encode only when it could matter.
        if len(text) * 4 > self.max_message_bytes:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.max_message_bytes:
                raise TwilioProtocolError(
                    "message_too_large",
                    f"message of {size} bytes exceeds the {self.max_message_bytes}-byte limit",
                )
        try:
            msg: object = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise TwilioProtocolError("invalid_json", f"message is not valid JSON: {exc}") from exc
        if not isinstance(msg, dict):
            raise TwilioProtocolError(
                "not_an_object", f"message is a JSON {_kind(msg)}, not an object"
            )
        match msg.get("event"):
            case "media":
                return [self._media(msg)]
            case "mark":
                return self._mark(msg, now)
            case "dtmf":
                return [self._dtmf(msg)]
            case "start":
                return [self._start(msg)]
            case "stop":
                return [self._stop(msg)]
            case "connected":
                return [self._connected(msg)]
            case str(event):
                raise TwilioProtocolError("unknown_event", f"unknown event {_show(event)}")
            case _:
                raise _field_error(msg, "event", "event", "a string")

    def _media(self, msg: _Object) -> AudioReceived:
        seq = self._envelope(msg, "media")
        media = _object(msg, "media", "media")
        track = _string(media, "track", "media.track")
        chunk = _decimal(media, "chunk", "media.chunk")
        timestamp = _decimal(media, "timestamp", "media.timestamp")
        payload = _string(media, "payload", "media.payload")
        if not _is_base64(payload):
            raise TwilioProtocolError("invalid_field", "media.payload is not valid base64")
        self._accept(seq)
        return AudioReceived(seq, self._sid(), track, chunk, timestamp, payload)

    def _mark(self, msg: _Object, now: float) -> list[TwilioEvent]:
        seq = self._envelope(msg, "mark")
        name = _string(_object(msg, "mark", "mark"), "name", "mark.name")
        self._accept(seq)
        echo = self._tracker.mark_echoed(name, now)
        return [MarkPlayed(seq, self._sid(), name, echo.flushed), *echo.acknowledged]

    def _dtmf(self, msg: _Object) -> DtmfReceived:
        seq = self._envelope(msg, "dtmf")
        dtmf = _object(msg, "dtmf", "dtmf")
        track = _string(dtmf, "track", "dtmf.track")
        digit = _string(dtmf, "digit", "dtmf.digit")
        if len(digit) != 1 or digit not in DTMF_KEYS:  # it reaches the model as a key press
            raise TwilioProtocolError(
                "invalid_field", f"dtmf.digit is not one key of {DTMF_KEYS}: {_show(digit)}"
            )
        self._accept(seq)
        return DtmfReceived(seq, self._sid(), track, digit)

    def _stop(self, msg: _Object) -> StreamStopped:
        seq = self._envelope(msg, "stop")
        stop = _object(msg, "stop", "stop")
        account_sid = _string(stop, "accountSid", "stop.accountSid")
        call_sid = _string(stop, "callSid", "stop.callSid")
        self._accept(seq)
        self.stopped = True
        return StreamStopped(seq, self._sid(), account_sid, call_sid)

    def _connected(self, msg: _Object) -> StreamConnected:
        self._check_order("connected")
        if self.connected:
            raise TwilioProtocolError("out_of_order", "connected received twice")
        protocol = _string(msg, "protocol", "protocol")
        version = _string(msg, "version", "version")
        self.connected = True
        return StreamConnected(protocol, version)

    def _start(self, msg: _Object) -> StreamStarted:
        self._check_order("start")
        seq = _decimal(msg, "sequenceNumber", "sequenceNumber")
        start = _object(msg, "start", "start")
        sid = _string(start, "streamSid", "start.streamSid")
        if not sid:
            raise TwilioProtocolError("invalid_field", "start.streamSid is empty")
        outer_sid = _string(msg, "streamSid", "streamSid")
        if outer_sid != sid:
            raise TwilioProtocolError(
                "stream_sid_mismatch",
                f"streamSid {_show(outer_sid)} does not match start.streamSid {_show(sid)}",
            )
        account_sid = _string(start, "accountSid", "start.accountSid")
        call_sid = _string(start, "callSid", "start.callSid")
        tracks = start.get("tracks")
        if not isinstance(tracks, list) or not all(type(t) is str for t in tracks):
            raise _field_error(start, "tracks", "start.tracks", "an array of strings")
        fmt = _object(start, "mediaFormat", "start.mediaFormat")
        media_format = MediaFormat(
            _string(fmt, "encoding", "start.mediaFormat.encoding"),
            _integer(fmt, "sampleRate", "start.mediaFormat.sampleRate"),
            _integer(fmt, "channels", "start.mediaFormat.channels"),
        )
        params: dict[str, str] = {}
        if "customParameters" in start:
            raw = _object(start, "customParameters", "start.customParameters")
            for key in raw:
                params[key] = _string(raw, key, f"start.customParameters.{key}")
        self._accept(seq)
        self.started = True
        self.stream_sid, self.account_sid, self.call_sid = sid, account_sid, call_sid
        self.media_format, self.custom_parameters = media_format, dict(params)
        sid_json = orjson.dumps(sid).decode()
        self._media_head = f'{{"event":"media","streamSid":{sid_json},"media":{{"payload":"'
        self._mark_head = f'{{"event":"mark","streamSid":{sid_json},"mark":{{"name":'
        self._clear_message = f'{{"event":"clear","streamSid":{sid_json}}}'
        return StreamStarted(seq, sid, account_sid, call_sid, tuple(tracks), media_format, params)

    def _check_order(self, event: str) -> None:
        if self.stopped:
            raise TwilioProtocolError("after_stop", f"{event} received after stop")
        if self.started:
            when = "twice" if event == "start" else "after start"
            raise TwilioProtocolError("out_of_order", f"{event} received {when}")

    def _envelope(self, msg: _Object, event: str) -> int:
        """Check a post-``start`` message's state and streamSid; return its sequence number."""
        if self.stopped:
            raise TwilioProtocolError("after_stop", f"{event} received after stop")
        if not self.started:
            raise TwilioProtocolError("before_start", f"{event} received before start")
        sid = msg.get("streamSid")
        if sid != self.stream_sid:
            if type(sid) is not str:
                raise _field_error(msg, "streamSid", "streamSid", "a string")
            raise TwilioProtocolError(
                "stream_sid_mismatch",
                f"streamSid {_show(sid)} does not match {_show(self.stream_sid)} from start",
            )
        return _decimal(msg, "sequenceNumber", "sequenceNumber")

    def _accept(self, seq: int) -> None:
        if seq != self._last_sequence + 1:
            self.sequence_gaps += 1
        self._last_sequence = seq

    def _sid(self) -> str:
        return self.stream_sid or ""

    # -- outbound --------------------------------------------------------

    def send_audio(self, item_id: str, audio: bytes, now: float, *, mark: bool = True) -> None:
        """Queue ``audio`` (raw mu-law) of ``item_id``, then by default a mark tied to its end."""
        self._check_can_send("send audio")
        if not audio:
            return
        payload = b2a_base64(audio, newline=False).decode("ascii")
        self._outgoing.append(f'{self._media_head}{payload}"}}}}')
        self._tracker.audio_sent(item_id, len(audio), now)
        if mark:
            self._mark_count += 1
            count = self._mark_count
            self._outgoing.append(f'{self._mark_head}{self._mark_name_head}{count}"}}}}')
            self._tracker.mark_sent(f"{self._mark_prefix}{count}", item_id, now)

    def send_mark(self, name: str) -> None:
        """Queue a free-form mark; its echo arrives as ``MarkPlayed(mark_name=name)``."""
        self._check_can_send("send a mark")
        if name.startswith(self._mark_prefix):
            raise LocalProtocolError(
                f"mark name {name!r} uses the reserved prefix {self._mark_prefix!r}"
            )
        try:
            name_json = orjson.dumps(name).decode()
        except orjson.JSONEncodeError as exc:  # lone surrogates have no UTF-8 form
            raise LocalProtocolError(f"mark name {name!r} cannot be sent as JSON") from exc
        self._outgoing.append(f"{self._mark_head}{name_json}}}}}")
        self._tracker.mark_sent(name)

    def clear(self, now: float) -> None:
        """Queue ``clear``: Twilio drops its buffer and sends every outstanding mark back."""
        self._check_can_send("clear")
        self._outgoing.append(self._clear_message)
        self._tracker.cleared(now)

    def data_to_send(self) -> list[str]:
        """Drain the queued outgoing JSON text frames, oldest first."""
        out, self._outgoing = self._outgoing, []
        return out

    def _check_can_send(self, what: str) -> None:
        if not self.started:
            raise LocalProtocolError(f"cannot {what} before Twilio's start message")
        if self.stopped:
            raise LocalProtocolError(f"cannot {what} after Twilio's stop message")

    # -- playback ----------------------------------------------------------

    def played_bytes(self, item_id: str, now: float | None = None) -> int:
        """Bytes of ``item_id`` Twilio has played: acknowledged, or interpolated to ``now``."""
        return self._tracker.played_bytes(item_id, now)

    def sent_bytes(self, item_id: str) -> int:
        """Bytes of ``item_id`` handed to ``send_audio`` so far."""
        return self._tracker.sent_bytes(item_id)

    @property
    def buffered_bytes(self) -> int:
        """Bytes sent and not yet acknowledged as played or flushed."""
        return self._tracker.buffered_bytes

    @property
    def is_playing(self) -> bool:
        return self._tracker.is_playing


def _kind(value: object) -> str:
    match value:
        case dict():
            return "object"
        case list():
            return "array"
        case str():
            return "string"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case _:
            return "null"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _field_error(obj: _Object, key: str, path: str, expected: str) -> TwilioProtocolError:
    if key not in obj:
        return TwilioProtocolError("missing_field", f"{path} is missing")
    got = _kind(obj[key])
    return TwilioProtocolError("invalid_field", f"{path} is not {expected} (got {got})")


def _string(obj: _Object, key: str, path: str) -> str:
    value = obj.get(key)
    if type(value) is str:
        return value
    raise _field_error(obj, key, path, "a string")


def _integer(obj: _Object, key: str, path: str) -> int:
    value = obj.get(key)
    if type(value) is int:  # not bool: true is not a sample rate
        return value
    raise _field_error(obj, key, path, "an integer")


def _object(obj: _Object, key: str, path: str) -> _Object:
    value = obj.get(key)
    if isinstance(value, dict):
        return value
    raise _field_error(obj, key, path, "an object")


def _is_base64(text: str) -> bool:
    """RFC 4648 base64 with padding, nothing else."""
    try:
        raw = a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return False
    # strict_mode (3.11) still accepts surplus "=" after a full quantum ("AAAA=="):
    # the decoded length gives it away.
    pad = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return len(raw) == len(text) // 4 * 3 - pad


def _decimal(obj: _Object, key: str, path: str) -> int:
    """A counter sent as a decimal string (protocols.md 1.2: never a JSON number)."""
    value = obj.get(key)
    if type(value) is str and value.isascii() and value.isdecimal():
        if len(value) <= _MAX_DECIMAL_DIGITS:
            return int(value)
        raise TwilioProtocolError("invalid_field", f"{path} {_show(value)} is out of range")
    if key not in obj:
        raise TwilioProtocolError("missing_field", f"{path} is missing")
    raise TwilioProtocolError("invalid_field", f"{path} {_show(value)} is not a decimal string")
