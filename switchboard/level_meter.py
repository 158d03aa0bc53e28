"""Audio level meter: RMS and peak in dBFS, and a smoothed level.

Theory of operation
-------------------
Each chunk fed (a 20 ms mu-law frame, or PCM16) yields its RMS and peak in
dBFS, where 0 dBFS is a full-scale square wave (so a full-scale sine reads
-3 dBFS), floored at ``floor_dbfs`` so silence reads the floor, not minus
infinity. Mu-law frames never get decoded: two 256-entry tables give each
code's squared and absolute sample value directly.

The smoothed level follows the RMS amplitude with separate time constants,
fast when the level rises (attack) and slow when it falls (release), like a
VU meter: ``level += (rms - level) * (1 - exp(-elapsed / tau))``. Time is not
read from a clock: ``elapsed`` is the chunk's duration in 20 ms frames,
derived from its sample count, so the meter is deterministic under test and
independent of when chunks arrive.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from switchboard.codec import (
    FRAME_MS,
    SAMPLE_RATE,
    Buffer,
    as_bytes,
    as_pcm16,
    check_rate,
    mulaw_decode,
)
from switchboard.errors import CodecError

__all__ = ["FLOOR_DBFS", "LevelMeter"]

FLOOR_DBFS = -96.0
FULL_SCALE = 32768.0

_CODES = mulaw_decode(bytes(range(256))).astype(np.float64)
_SQUARE = _CODES * _CODES
_ABS = np.abs(_CODES)


def _dbfs(amplitude: float, floor: float) -> float:
    if amplitude <= 0.0:
        return floor
    return max(floor, 20.0 * math.log10(amplitude / FULL_SCALE))


class LevelMeter:
    """Measure one direction of a call's audio, chunk by chunk.

    Feed with ``feed_mulaw`` (Twilio frames) or ``feed_pcm``; read
    ``rms_dbfs``/``peak_dbfs`` (last chunk) and ``level_dbfs`` (smoothed), or
    ask ``is_speaking``. ``attack_frames``/``release_frames`` are time
    constants in 20 ms frames.
    """

    __slots__ = (
        "_attack",
        "_level",
        "_peak",
        "_release",
        "_rms",
        "_samples_per_frame",
        "floor_dbfs",
        "frames",
    )

    def __init__(
        self,
        *,
        rate: int = SAMPLE_RATE,
        attack_frames: float = 1.0,
        release_frames: float = 10.0,
        floor_dbfs: float = FLOOR_DBFS,
    ) -> None:
        self._samples_per_frame = check_rate(rate) * FRAME_MS / 1000
        for name, value in (("attack_frames", attack_frames), ("release_frames", release_frames)):
            if not isinstance(value, int | float) or not value > 0:
                raise CodecError(f"{name} must be > 0, got {value!r}")
        if not isinstance(floor_dbfs, int | float) or not floor_dbfs < 0:
            raise CodecError(f"floor_dbfs must be < 0, got {floor_dbfs!r}")
        self._attack = attack_frames
        self._release = release_frames
        self.floor_dbfs = floor_dbfs
        self.frames = 0.0
        self._rms = self._peak = self._level = 0.0

    def feed_mulaw(self, data: Buffer) -> float:
        """Measure a chunk of mu-law bytes; return its RMS in dBFS."""
        codes = np.frombuffer(as_bytes(data, "mu-law audio"), dtype=np.uint8)
        if not codes.size:
            return self.rms_dbfs
        return self._update(
            codes.size, float(_SQUARE.take(codes).sum()), float(_ABS.take(codes).max())
        )

    def feed_pcm(self, samples: npt.NDArray[np.int16] | Buffer) -> float:
        """Measure a chunk of PCM16; return its RMS in dBFS."""
        pcm = as_pcm16(samples).astype(np.float64)
        if not pcm.size:
            return self.rms_dbfs
        return self._update(pcm.size, float(pcm @ pcm), float(np.abs(pcm).max()))

    def _update(self, count: int, energy: float, peak: float) -> float:
        self._rms = math.sqrt(energy / count)
        self._peak = peak
        elapsed = count / self._samples_per_frame
        tau = self._attack if self._rms > self._level else self._release
        self._level += (self._rms - self._level) * -math.expm1(-elapsed / tau)
        self.frames += elapsed
        return self.rms_dbfs

    @property
    def rms_dbfs(self) -> float:
        """RMS of the last non-empty chunk, in dBFS."""
        return _dbfs(self._rms, self.floor_dbfs)

    @property
    def peak_dbfs(self) -> float:
        """Largest absolute sample of the last non-empty chunk, in dBFS."""
        return _dbfs(self._peak, self.floor_dbfs)

    @property
    def level_dbfs(self) -> float:
        """Smoothed RMS level (attack/release), in dBFS."""
        return _dbfs(self._level, self.floor_dbfs)

    def is_speaking(self, threshold_dbfs: float = -40.0) -> bool:
        """True while the smoothed level is at or above ``threshold_dbfs``."""
        return self.level_dbfs >= threshold_dbfs

    def reset(self) -> None:
        """Back to silence, as if nothing had been fed."""
        self.frames = 0.0
        self._rms = self._peak = self._level = 0.0
