"""In-band DTMF: tone generation and a streaming Goertzel detector.

Twilio reports key presses as ``dtmf`` events, so in-band detection is a
fallback (e.g. a caller's digits carried as audio through a PBX).

Theory of operation
-------------------
Audio is cut into blocks of 25.6 ms (205 samples at 8 kHz, the classic size:
bins ~39 Hz wide, narrower than the 73 Hz gap between the closest DTMF tones).
For each block the Goertzel power of the four row and four column
frequencies is measured. The recurrence ``s[n] = x[n] + 2cos(w)s[n-1] -
s[n-2]`` ends in ``|X(w)|^2``, the power of the block's DFT at exactly ``w``;
it is computed here in that closed form, as one matrix product for all eight
frequencies and all blocks at once (``goertzel_power`` is the textbook loop,
kept as the reference). A block is a *hit* for a digit when:

1. the strongest row and the strongest column each exceed an absolute level;
2. the twist is within limits: the column tone at most 4 dB above the row
   tone (reverse twist), and at most 8 dB below it (normal twist);
3. each winner stands 8 dB above the other tones of its group;
4. the two tones carry most of the block's total energy. This rejects speech
   and music, whose energy spreads over many harmonics even when two of them
   happen to fall on DTMF frequencies, and blocks that are mostly silence,
   so a tone must fill most of two blocks to count: whatever its alignment,
   a tone under 38 ms is never reported and one of 64 ms or more always is.

Debounce: a digit is reported when two consecutive blocks hit the same digit
and it is not already held; the key counts as released after two consecutive
blocks without that digit. So one press yields exactly one digit, and a single
bad block inside a press does not split it in two.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from switchboard.codec import SAMPLE_RATE, Buffer, as_pcm16, check_rate
from switchboard.errors import CodecError

__all__ = [
    "COL_HZ",
    "DIGITS",
    "KEYPAD",
    "ROW_HZ",
    "DtmfDetector",
    "dtmf_tone",
    "goertzel_power",
]

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COL_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DIGITS = "".join(sorted("".join(KEYPAD)))
_POSITION = {key: (r, c) for r, row in enumerate(KEYPAD) for c, key in enumerate(row)}

BLOCK_MS = 25.6  # 205 samples at 8 kHz
MIN_TONE_DBFS = -38.0  # per tone, as the level of a sine: 0 dBFS is a full-scale sine
REVERSE_TWIST = 10 ** (4 / 10)  # column above row, power ratio
NORMAL_TWIST = 10 ** (8 / 10)  # row above column
RELATIVE_PEAK = 10 ** (8 / 10)  # winner over the rest of its group
MIN_TONE_SHARE = 0.75  # fraction of the block's energy in the two tones
FULL_SCALE = 32768.0


def dtmf_tone(
    digit: str, duration_ms: float = 100, rate: int = SAMPLE_RATE, amplitude: float = 0.25
) -> npt.NDArray[np.int16]:
    """Return the two-tone signal for ``digit`` (0-9, *, #, A-D).

    ``amplitude`` is the peak of each tone as a fraction of full scale; the sum
    peaks at twice that, so it must lie in (0, 0.5].
    """
    if not isinstance(digit, str) or digit not in _POSITION:
        raise CodecError(f"not a DTMF digit: {digit!r} (expected one of {DIGITS})")
    check_rate(rate)
    if not isinstance(amplitude, int | float) or not 0 < amplitude <= 0.5:
        raise CodecError(f"DTMF amplitude must be in (0, 0.5], got {amplitude!r}")
    if not isinstance(duration_ms, int | float) or not duration_ms >= 0:
        raise CodecError(f"DTMF duration must be >= 0 ms, got {duration_ms!r}")
    row, col = _POSITION[digit]
    t = np.arange(round(rate * duration_ms / 1000)) / rate
    wave = np.sin(2 * np.pi * ROW_HZ[row] * t) + np.sin(2 * np.pi * COL_HZ[col] * t)
    return np.round(wave * amplitude * (FULL_SCALE - 1)).astype(np.int16)


def goertzel_power(block: npt.NDArray[np.float64], freq: float, rate: int) -> float:
    """Textbook Goertzel: ``|X(freq)|^2`` of ``block``, one sample at a time."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block.tolist():
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


class DtmfDetector:
    """Streaming detector: ``feed(pcm)`` returns the digits whose press began.

    Feed any chunk sizes; samples are buffered into whole blocks. One key
    press yields exactly one digit. Not thread-safe; one per audio stream.
    """

    def __init__(self, rate: int = SAMPLE_RATE) -> None:
        self.rate = check_rate(rate)
        self.block = round(rate * BLOCK_MS / 1000)
        n = np.arange(self.block)
        w = 2 * np.pi * np.array(ROW_HZ + COL_HZ)[:, None] / rate * n
        self._basis = np.vstack([np.cos(w), np.sin(w)]).T  # (block, 16)
        # Scale |X|^2 to the power of a sine (A^2 / 2), comparable to mean(x^2).
        self._scale = 2.0 / (self.block * self.block)
        tone = FULL_SCALE * 10 ** (MIN_TONE_DBFS / 20)
        self._min_power = tone * tone / 2
        self._pending = np.zeros(0, dtype=np.float64)
        self._last_hit: str | None = None
        self._held: str | None = None

    def reset(self) -> None:
        """Forget buffered audio and any key held down."""
        self._pending = np.zeros(0, dtype=np.float64)
        self._last_hit = self._held = None

    def feed(self, samples: npt.NDArray[np.int16] | Buffer) -> list[str]:
        """Add PCM16 samples; return digits newly pressed, in order."""
        pcm = as_pcm16(samples)
        data = np.concatenate([self._pending, pcm.astype(np.float64)])
        count = len(data) // self.block
        self._pending = data[count * self.block :]
        if not count:
            return []
        blocks = data[: count * self.block].reshape(count, self.block)
        parts = blocks @ self._basis
        powers = (parts[:, :8] ** 2 + parts[:, 8:] ** 2) * self._scale
        totals = np.einsum("ij,ij->i", blocks, blocks) / self.block
        digits: list[str] = []
        for power, total in zip(powers.tolist(), totals.tolist(), strict=True):
            hit = self._classify(power, total)
            if hit == self._last_hit:
                if hit is not None and hit != self._held:
                    digits.append(hit)
                self._held = hit
            self._last_hit = hit
        return digits

    def _classify(self, power: list[float], total: float) -> str | None:
        rows, cols = power[:4], power[4:]
        r = max(range(4), key=rows.__getitem__)
        c = max(range(4), key=cols.__getitem__)
        row, col = rows[r], cols[c]
        if row < self._min_power or col < self._min_power:
            return None
        if col > row * REVERSE_TWIST or row > col * NORMAL_TWIST:
            return None
        if any(p * RELATIVE_PEAK > row for i, p in enumerate(rows) if i != r):
            return None
        if any(p * RELATIVE_PEAK > col for i, p in enumerate(cols) if i != c):
            return None
        if row + col < MIN_TONE_SHARE * total:
            return None
        return KEYPAD[r][c]
