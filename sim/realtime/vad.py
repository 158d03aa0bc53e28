"""Energy-based voice activity detection over the input audio timeline.

The real ``server_vad`` is a model; the emulator needs something deterministic
that still reacts to *real* audio, so it measures the energy of each 10 ms
frame of the decoded caller audio (any input format) and runs a two-state
machine on it.

Threshold mapping
-----------------
``threshold`` (0..1, default 0.5; "a higher threshold will require louder
audio to activate the model") maps linearly onto frame RMS in dBFS::

    loud(frame)  <=>  rms_dbfs(frame) >= -60 + 40 * threshold

so 0.0 -> -60 dBFS, 0.5 -> -40 dBFS, 1.0 -> -20 dBFS. The speech clips in
``sim/clips`` have median frame levels of -26..-36 dBFS and the mu-law
silence byte decodes to digital zero, so the default cleanly separates them.

Timeline
--------
Positions are milliseconds of audio appended since the session started
(bytes / bytes-per-ms), never wall-clock time, as in the service:

* Speech starts once two consecutive frames (20 ms) are loud; the reported
  ``audio_start_ms`` is the first loud frame minus ``prefix_padding_ms``,
  never before ``floor_ms`` (the start of the uncommitted buffer).
* Speech stops when ``silence_duration_ms`` of quiet frames have followed the
  last loud one; ``audio_end_ms`` is that point, i.e. it includes the silence,
  as the API reference says.

``EnergyVad.push`` takes samples and returns ``VadEvent``s; it has no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "EnergyVad",
    "SpeechStarted",
    "SpeechStopped",
    "VadEvent",
    "VadSettings",
    "threshold_dbfs",
]

FRAME_MS = 10
ONSET_FRAMES = 2
_FULL_SCALE_SQ = 32768.0**2


def threshold_dbfs(threshold: float) -> float:
    """The frame level (dBFS) that counts as speech for a ``threshold`` of 0..1."""
    return -60.0 + 40.0 * min(max(threshold, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    """Frame-energy VAD; feed it samples in order with ``push``."""

    def __init__(self, settings: VadSettings, sample_rate: int, start_ms: int = 0) -> None:
        self.settings = settings
        self.sample_rate = sample_rate
        self._frame = sample_rate * FRAME_MS // 1000
        # Compare mean squares, not dB, to keep the per-frame work to one division.
        self._min_mean_sq = _FULL_SCALE_SQ * 10 ** (threshold_dbfs(settings.threshold) / 10)
        self._carry = np.zeros(0, dtype=np.int16)
        self._pos_ms = start_ms  # end of the last whole frame seen
        self.speaking = False
        self._loud_run = 0
        self._quiet_ms = 0
        self.floor_ms = start_ms

    @property
    def position_ms(self) -> int:
        return self._pos_ms

    def reset(self, floor_ms: int) -> None:
        """Forget any speech in progress (buffer cleared or committed by hand)."""
        self.speaking = False
        self._loud_run = 0
        self._quiet_ms = 0
        self.floor_ms = floor_ms

    def push(self, samples: npt.NDArray[np.int16]) -> list[VadEvent]:
        if self._carry.size:
            samples = np.concatenate((self._carry, samples))
        whole = samples.size - samples.size % self._frame
        self._carry = samples[whole:].copy()
        if not whole:
            return []
        frames = samples[:whole].astype(np.float32).reshape(-1, self._frame)
        loud = (np.einsum("ij,ij->i", frames, frames) / self._frame) >= self._min_mean_sq
        events: list[VadEvent] = []
        for is_loud in loud.tolist():
            self._pos_ms += FRAME_MS
            event = self._step(is_loud)
            if event is not None:
                events.append(event)
        return events

    def _step(self, loud: bool) -> VadEvent | None:
        if not self.speaking:
            self._loud_run = self._loud_run + 1 if loud else 0
            if self._loud_run < ONSET_FRAMES:
                return None
            self.speaking = True
            self._quiet_ms = 0
            onset = self._pos_ms - ONSET_FRAMES * FRAME_MS
            start = max(self.floor_ms, onset - self.settings.prefix_padding_ms)
            return SpeechStarted(start)
        if loud:
            self._quiet_ms = 0
            return None
        self._quiet_ms += FRAME_MS
        if self._quiet_ms < self.settings.silence_duration_ms:
            return None
        self.speaking = False
        self._loud_run = 0
        self.floor_ms = self._pos_ms
        return SpeechStopped(self._pos_ms)
