"""Everything one call needs to handle its audio, in one object.

Theory of operation
-------------------
Inbound (caller -> model): Twilio sends 160-byte mu-law frames. ``inbound``
counts them, updates the caller's level meter and, if in-band DTMF detection
is on, decodes them and returns the digits detected. Detection is off by
default because Twilio already delivers key presses as ``dtmf`` events
(protocols.md); turning it on costs a decode and a Goertzel pass per frame.

Outbound (model -> caller): the model's audio for one assistant item arrives
as deltas of any size. ``frame_outbound`` cuts them into whole 20 ms frames,
so Twilio gets steady 160-byte payloads and playback offsets stay aligned to
frames. Exactly one item is framed at a time:

* ``finish_item`` (the item's audio is done) returns its last partial frame,
  padded with mu-law silence;
* ``drop_item`` (barge-in: Twilio was cleared) discards the partial frame;
* audio for a different item while one is open discards the open item's
  partial frame (under 20 ms), as if dropped: call ``finish_item`` first to
  keep it.

Counters (``stats``) give frames and bytes each way and bytes dropped, for
metrics. No clock, no I/O: time enters only as audio duration.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.codec import FRAME_BYTES, Buffer, Framer, as_bytes, mulaw_decode
from switchboard.dtmf import DtmfDetector
from switchboard.level_meter import LevelMeter

__all__ = ["CallAudio", "CallAudioStats"]


@dataclass(frozen=True, slots=True)
class CallAudioStats:
    """A snapshot of a call's audio counters."""

    frames_in: int
    bytes_in: int
    frames_out: int
    bytes_out: int
    bytes_dropped: int


class CallAudio:
    """Per-call codec state: outbound framing, inbound DTMF, level meters.

    ``caller_meter`` measures what Twilio sends; ``agent_meter`` measures the
    model's audio as it is framed. One instance per call; not thread-safe.
    """

    def __init__(self, *, detect_dtmf: bool = False, frame_bytes: int = FRAME_BYTES) -> None:
        self._framer = Framer(frame_bytes)
        self._item: str | None = None
        self._dtmf = DtmfDetector() if detect_dtmf else None
        self.caller_meter = LevelMeter()
        self.agent_meter = LevelMeter()
        self._frames_in = self._bytes_in = 0
        self._frames_out = self._bytes_out = self._bytes_dropped = 0

    @property
    def current_item(self) -> str | None:
        """The assistant item being framed, or None between items."""
        return self._item

    @property
    def detects_dtmf(self) -> bool:
        """Whether ``inbound`` runs in-band DTMF detection."""
        return self._dtmf is not None

    @property
    def inbound_level(self) -> float:
        """The caller's smoothed level in dBFS."""
        return self.caller_meter.level_dbfs

    @property
    def outbound_level(self) -> float:
        """The agent's (model's) smoothed level in dBFS."""
        return self.agent_meter.level_dbfs

    @property
    def stats(self) -> CallAudioStats:
        """Counters since the call began."""
        return CallAudioStats(
            frames_in=self._frames_in,
            bytes_in=self._bytes_in,
            frames_out=self._frames_out,
            bytes_out=self._bytes_out,
            bytes_dropped=self._bytes_dropped,
        )

    def inbound(self, payload: Buffer) -> list[str]:
        """Account one inbound mu-law payload; return in-band DTMF digits, if on."""
        data = as_bytes(payload, "inbound mu-law payload")
        self._frames_in += 1
        self._bytes_in += len(data)
        self.caller_meter.feed_mulaw(data)
        if self._dtmf is None:
            return []
        return self._dtmf.feed(mulaw_decode(data))

    def frame_outbound(self, item_id: str, data: Buffer) -> list[bytes]:
        """Add model audio (mu-law) for ``item_id``; return the whole frames ready to send."""
        chunk = as_bytes(data, "outbound mu-law audio")
        if item_id != self._item:
            self.drop_item()
            self._item = item_id
        self.agent_meter.feed_mulaw(chunk)
        return self._sent(self._framer.push(chunk))

    def finish_item(self, item_id: str) -> bytes | None:
        """End ``item_id``'s audio; return its padded last frame, or None if none is held.

        A stale id (not the open item) returns None and leaves the open item alone.
        """
        if item_id != self._item:
            return None
        self._item = None
        tail = self._framer.flush()
        if tail is not None:
            self._sent([tail])
        return tail

    def drop_item(self) -> int:
        """Discard the open item's partial frame (after barge-in); return bytes dropped."""
        dropped = self._framer.clear()
        self._bytes_dropped += dropped
        self._item = None
        return dropped

    def _sent(self, frames: list[bytes]) -> list[bytes]:
        self._frames_out += len(frames)
        self._bytes_out += sum(map(len, frames))
        return frames
