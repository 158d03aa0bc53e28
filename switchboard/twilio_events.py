"""Typed Twilio Media Streams messages (protocols.md section 1.2).

Events are what Twilio told us, in the past tense; they are produced only by
``switchboard.twilio_stream.TwilioStream.receive``. Wire strings such as
``sequenceNumber`` and ``chunk`` arrive as decimal strings and are exposed here
as ``int``. Audio payloads stay base64 text: Twilio and the Realtime API both
speak base64 mu-law, so a frame can pass through without being decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.errors import TwilioProtocolError

__all__ = [
    "AudioReceived",
    "DtmfReceived",
    "MarkPlayed",
    "MediaFormat",
    "PlaybackAcknowledged",
    "StreamConnected",
    "StreamStarted",
    "StreamStopped",
    "TwilioEvent",
    "TwilioMessageRejected",
]


@dataclass(frozen=True, slots=True)
class MediaFormat:
    encoding: str
    sample_rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """``connected``: the WebSocket is up; no stream sid yet."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """``start``: the stream's identity and the ``<Parameter>`` values."""

    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    media_format: MediaFormat
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """``media``: 20 ms of the caller's mu-law audio, still base64."""

    sequence_number: int
    stream_sid: str
    track: str
    chunk: int
    timestamp_ms: int
    payload: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """``dtmf``: the caller pressed a key."""

    sequence_number: int
    stream_sid: str
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """``mark`` echoed by Twilio, raw.

    Twilio echoes a mark when playout reaches it, when nothing was buffered,
    or when a ``clear`` flushed it; ``flushed`` is true in the last case,
    which proves nothing about playback. ``mark_name`` is the wire name.
    """

    sequence_number: int
    stream_sid: str
    mark_name: str
    flushed: bool = False


@dataclass(frozen=True, slots=True)
class PlaybackAcknowledged:
    """Twilio has played an assistant item up to ``played_bytes`` (8 bytes/ms).

    Emitted after a ``MarkPlayed`` that is proof of playback of audio sent
    with ``TwilioStream.send_audio``; ``buffer_empty`` is true when the mark
    was the last one queued, so nothing of ours is left in Twilio's buffer.
    """

    item_id: str
    played_bytes: int
    buffer_empty: bool


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """``stop``: the stream ended (hang-up, transfer or call end)."""

    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


@dataclass(frozen=True, slots=True)
class TwilioMessageRejected:
    """A frame that broke the protocol; ``error`` names what was wrong."""

    error: TwilioProtocolError
    raw_prefix: str = ""


TwilioEvent = (
    StreamConnected
    | StreamStarted
    | AudioReceived
    | DtmfReceived
    | MarkPlayed
    | PlaybackAcknowledged
    | StreamStopped
    | TwilioMessageRejected
)
