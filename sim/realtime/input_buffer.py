"""The input audio buffer and its place on the session's audio timeline.

Every ``input_audio_buffer.append`` extends the timeline (milliseconds of
audio since the session started; protocols.md 3.4: ``audio_start_ms`` and
``audio_end_ms`` are positions on it). The buffer holds the audio not yet
committed, from ``start_ms`` to ``pos_ms``. With a VAD, speech segments are
cut out of it as they end; while nobody speaks only the last
``prefix_padding_ms`` (plus a margin) is kept, so a long quiet call does not
grow memory.
"""

from __future__ import annotations

from sim.realtime.audio import PCM24K, AudioFormat
from sim.realtime.vad import EnergyVad, VadEvent, VadSettings

__all__ = ["InputBuffer"]

KEEP_MARGIN_MS = 60


class InputBuffer:
    def __init__(self, fmt: AudioFormat = PCM24K) -> None:
        self.fmt = fmt
        self.vad: EnergyVad | None = None
        self._settings: VadSettings | None = None
        self._buf = bytearray()
        self.start_ms = 0.0
        self.pos_ms = 0.0
        self._odd = b""  # a PCM16 sample split across two appends

    @property
    def buffered_ms(self) -> float:
        return self.pos_ms - self.start_ms

    @property
    def speaking(self) -> bool:
        return self.vad is not None and self.vad.speaking

    def configure(self, fmt: AudioFormat, settings: VadSettings | None) -> None:
        """Follow a ``session.update``; a changed VAD restarts at the current position."""
        if fmt == self.fmt and settings == self._settings:
            return
        self.fmt = fmt
        self._settings = settings
        self._odd = b""
        self.vad = None if settings is None else EnergyVad(settings, fmt.rate, int(self.pos_ms))
        if self.vad is not None:
            self.vad.floor_ms = int(self.start_ms)

    def append(self, audio: bytes) -> list[VadEvent]:
        self._buf += audio
        self.pos_ms += len(audio) / self.fmt.bytes_per_ms
        if self.vad is None:
            return []
        data = self._odd + audio
        if self.fmt.sample_bytes == 2 and len(data) % 2:
            data, self._odd = data[:-1], data[-1:]
        else:
            self._odd = b""
        events = self.vad.push(self.fmt.decode(data))
        if not self.vad.speaking and not events:
            keep_from = self.pos_ms - self.vad.settings.prefix_padding_ms - KEEP_MARGIN_MS
            if keep_from > self.start_ms:
                self._drop_until(keep_from)
        return events

    def _offset(self, ms: float) -> int:
        offset = round((ms - self.start_ms) * self.fmt.bytes_per_ms)
        offset -= offset % self.fmt.sample_bytes
        return min(max(offset, 0), len(self._buf))

    def _drop_until(self, ms: float) -> None:
        cut = self._offset(ms)
        del self._buf[:cut]
        self.start_ms += cut / self.fmt.bytes_per_ms
        if self.vad is not None:
            self.vad.floor_ms = max(self.vad.floor_ms, int(self.start_ms + 0.999))

    def take(self, start_ms: float, end_ms: float) -> bytes:
        """Commit the audio between two timeline positions; drop everything before the end."""
        audio = bytes(self._buf[self._offset(start_ms) : self._offset(end_ms)])
        self._drop_until(end_ms)
        return audio

    def take_all(self) -> bytes:
        audio = bytes(self._buf)
        self.clear()
        return audio

    def clear(self) -> None:
        self._buf.clear()
        self.start_ms = self.pos_ms
        if self.vad is not None:
            self.vad.reset(int(self.pos_ms))
