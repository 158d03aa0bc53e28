"""What the emulator remembers about each call, for tests to assert on.

Times are on the *call clock*: milliseconds since the call was answered
(``StreamRecord.started_ms`` converts to stream time). ``HeardTrack`` is the
audio the callee actually heard, placed in time: stream audio as the playout
buffer played it (not as received), ``<Say>``/``<Play>`` stand-ins, and
``SendDigits`` tones; write it with ``write_wav`` (8 kHz PCM16, stdlib
``wave``).
"""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from switchboard.codec import MULAW_SILENCE, mulaw_decode

from .calls import CallStatus, Transition
from .playout import AudioPlayed, MarkEchoed, PlayoutEvent, RunEnded, RunStarted

__all__ = [
    "CallRecord",
    "CallbackRecord",
    "ClearRecord",
    "HeardItem",
    "HeardTrack",
    "MarkRecord",
    "Notification",
    "StreamRecord",
    "WsMessage",
    "write_wav",
]


@dataclass(frozen=True, slots=True)
class WsMessage:
    t_ms: float
    direction: str  # "sent" (emulator -> app) or "received" (app -> emulator)
    text: str

    @property
    def data(self) -> dict[str, object]:
        value = json.loads(self.text)
        return value if isinstance(value, dict) else {}

    @property
    def event(self) -> str:
        event = self.data.get("event")
        return event if isinstance(event, str) else ""


@dataclass(slots=True)
class MarkRecord:
    name: str
    received_ms: float
    echoed_ms: float | None = None
    played: bool | None = None  # False: flushed by a clear (or the call ended first)


@dataclass(frozen=True, slots=True)
class ClearRecord:
    at_ms: float
    dropped_bytes: int
    marks: tuple[str, ...]

    @property
    def dropped_ms(self) -> float:
        return self.dropped_bytes / 8


@dataclass(frozen=True, slots=True)
class HeardItem:
    """A stretch of heard audio between boundaries (run start/end, played marks)."""

    start_ms: float
    end_ms: float
    source: str  # stream | say | play | digits
    ended_by: str  # "mark:<name>", drained, cleared, closed, or the verb's name

    @property
    def cut(self) -> bool:
        return self.ended_by in ("cleared", "closed")


@dataclass(frozen=True, slots=True)
class Notification:
    t_ms: float
    code: int
    message: str
    level: str = "error"


@dataclass(frozen=True, slots=True)
class CallbackRecord:
    kind: str  # status | amd | stream-status | twiml
    url: str
    method: str
    params: dict[str, str]
    signature: str
    status_code: int | None
    error: str | None
    at: datetime


def write_wav(path: str | Path, mulaw: bytes) -> Path:
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(mulaw_decode(mulaw).astype("<i2").tobytes())
    return path


class HeardTrack:
    def __init__(self) -> None:
        self._timeline = bytearray()
        self.items: list[HeardItem] = []
        self._open: tuple[float, str] | None = None  # (start_ms, source) of the current item
        self._offset = 0.0  # call-clock ms of the stream clock's zero

    def add(self, start_ms: float, data: bytes) -> None:
        at = max(0, round(start_ms * 8))
        end = at + len(data)
        if end > len(self._timeline):
            self._timeline += bytes([MULAW_SILENCE]) * (end - len(self._timeline))
        self._timeline[at:end] = data

    def add_item(self, start_ms: float, data: bytes, source: str, ended_by: str) -> None:
        self.add(start_ms, data)
        self.items.append(HeardItem(start_ms, start_ms + len(data) / 8, source, ended_by))

    def on_stream(self, event: PlayoutEvent, offset_ms: float) -> None:
        """Feed a stream's playout events; ``offset_ms``: the stream's zero on the call clock."""
        match event:
            case RunStarted(at_ms=at):
                self._open = (at + offset_ms, "stream")
            case AudioPlayed(start_ms=at, data=data):
                self.add(at + offset_ms, data)
                if self._open is None:
                    self._open = (at + offset_ms, "stream")
            case MarkEchoed(at_ms=at, played=True, name=name):
                self._close(at + offset_ms, f"mark:{name}")
            case RunEnded(at_ms=at, reason=reason):
                self._close(at + offset_ms, reason)

    def _close(self, end_ms: float, ended_by: str) -> None:
        if self._open is not None:
            start, source = self._open
            self._open = None
            if end_ms > start:
                self.items.append(HeardItem(start, end_ms, source, ended_by))

    @property
    def end_ms(self) -> float:
        """Call-clock time up to which something has been heard (or silence filled in)."""
        return len(self._timeline) / 8

    def mulaw(self) -> bytes:
        return bytes(self._timeline)

    def pcm16(self) -> npt.NDArray[np.int16]:
        return mulaw_decode(bytes(self._timeline))

    def write_wav(self, path: str | Path) -> Path:
        return write_wav(path, bytes(self._timeline))


@dataclass(eq=False)
class StreamRecord:
    stream_sid: str
    url: str
    name: str
    custom_parameters: dict[str, str]
    started_ms: float | None = None  # call clock when "start" was sent
    ended_ms: float | None = None
    end_reason: str = ""  # closed-by-app | stopped (call ended or redirected) | error
    error_code: int | None = None
    messages: list[WsMessage] = field(default_factory=list)
    frames_sent: int = 0
    sent_audio: bytearray = field(default_factory=bytearray)
    received_audio: bytearray = field(default_factory=bytearray)
    marks: list[MarkRecord] = field(default_factory=list)
    clears: list[ClearRecord] = field(default_factory=list)
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    said: list[tuple[float, str]] = field(default_factory=list)  # (call ms, utterance label)
    rejected: list[tuple[float, str, str]] = field(default_factory=list)

    def events(self, direction: str | None = None) -> list[str]:
        return [m.event for m in self.messages if direction in (None, m.direction)]

    def sent(self, event: str | None = None) -> list[dict[str, object]]:
        return [
            m.data
            for m in self.messages
            if m.direction == "sent" and (event is None or m.event == event)
        ]

    def received(self, event: str | None = None) -> list[dict[str, object]]:
        return [
            m.data
            for m in self.messages
            if m.direction == "received" and (event is None or m.event == event)
        ]


@dataclass(eq=False)
class CallRecord:
    sid: str
    account_sid: str
    to: str
    from_: str
    params: tuple[tuple[str, str], ...]  # create()'s form; inbound: the number's settings
    date_created: datetime
    direction: str = "outbound-api"  # or "inbound" (Exchange.ring_in)
    phone_number_sid: str | None = None  # inbound: the IncomingPhoneNumber rung
    status: CallStatus = CallStatus.QUEUED
    date_updated: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    answered_time: datetime | None = None
    answered_by: str | None = None
    queue_time_ms: int = 0
    duration: str | None = None  # whole seconds from answer to end, as the resource shows it
    end_reason: str = ""
    error_code: int | None = None
    transitions: list[Transition] = field(default_factory=list)
    callbacks: list[CallbackRecord] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    streams: list[StreamRecord] = field(default_factory=list)
    heard: HeardTrack = field(default_factory=HeardTrack)

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    def params_all(self, name: str) -> list[str]:
        return [v for k, v in self.params if k == name]

    @property
    def async_amd_raw(self) -> str | None:
        """The ``AsyncAmd`` string exactly as sent (``"True"`` betrays ``async_amd=True``)."""
        return self.param("AsyncAmd")

    @property
    def stream(self) -> StreamRecord | None:
        """The latest media stream, if any."""
        return self.streams[-1] if self.streams else None

    def callbacks_of(self, kind: str) -> list[CallbackRecord]:
        return [c for c in self.callbacks if c.kind == kind]
