"""Telephone audio: G.711 mu-law, resampling and 20 ms framing.

Theory of operation
-------------------
Twilio Media Streams carry ``audio/x-mulaw`` at 8000 Hz, mono: one byte per
sample, 8 bytes per millisecond, 160 bytes per 20 ms frame; mu-law silence is
``0xFF`` (protocols.md, "Audio format").

* **G.711 mu-law.** Both directions are table lookups. The 256-entry decode
  table and the 65536-entry encode table are computed once, at import, from the
  reference algorithm (Sun's ``g711.c``, which CPython's ``audioop`` also
  uses): a 16-bit sample is shifted to 14 bits, its magnitude clipped to 8159,
  biased by 33 and split into a 3-bit segment and a 4-bit step; the code word
  is complemented. Encoding a frame is then one fancy-index over the samples
  viewed as ``uint16``.
* **Resampling** (8 kHz <-> 16/24/48 kHz) goes through ``soxr``: ``resample``
  for a whole signal, ``Resampler`` for a stream cut into chunks.
* **Framing.** ``Framer`` turns arbitrary-size chunks into whole frames. It
  keeps at most one partial frame, so each byte is copied a bounded number of
  times however the input is cut.

PCM is always a one-dimensional ``numpy.int16`` array; where PCM arrives as
bytes it is little-endian, as on the wire. Bad input raises ``CodecError``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

from switchboard.errors import CodecError

__all__ = [
    "BYTES_PER_MS",
    "FRAME_BYTES",
    "FRAME_MS",
    "MULAW_SILENCE",
    "QUALITIES",
    "SAMPLE_RATE",
    "SUPPORTED_RATES",
    "Buffer",
    "Framer",
    "Resampler",
    "as_bytes",
    "as_pcm16",
    "check_rate",
    "frames_of",
    "mulaw_decode",
    "mulaw_encode",
    "resample",
]

SAMPLE_RATE = 8000
FRAME_MS = 20
BYTES_PER_MS = SAMPLE_RATE // 1000
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
MULAW_SILENCE = 0xFF
SUPPORTED_RATES = (8000, 16000, 24000, 48000)
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")  # soxr's recipes, quick to very high

Buffer = bytes | bytearray | memoryview


def _decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0xFF  # mu-law code words are stored complemented
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _encode_table() -> npt.NDArray[np.uint8]:
    # Entry i is the code for the int16 whose bit pattern is i, so that a
    # sample array viewed as uint16 indexes the table directly.
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + 0x21
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude)
    step = (magnitude >> np.minimum(segment + 1, 8)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | step)
    return (code ^ mask).astype(np.uint8)


_DECODE = _decode_table()
_ENCODE = _encode_table()
_DECODE.flags.writeable = False
_ENCODE.flags.writeable = False


def as_bytes(data: object, what: str = "audio") -> bytes | bytearray:
    """Validate a bytes-like argument; ``what`` names it in the error."""
    match data:
        case bytes() | bytearray():
            return data
        case memoryview():
            return data.tobytes()
        case _:
            raise CodecError(f"{what} must be bytes, got {type(data).__name__}")


def as_pcm16(samples: object) -> npt.NDArray[np.int16]:
    """Validate PCM16: a 1-D ``int16`` array, or little-endian PCM16 bytes.

    Arrays pass through unchanged; bytes become a (read-only) view.
    """
    if isinstance(samples, np.ndarray):
        if samples.dtype != np.int16:
            raise CodecError(f"PCM samples must have dtype int16, got {samples.dtype}")
        if samples.ndim != 1:
            raise CodecError(f"PCM samples must be one-dimensional, got {samples.ndim} dims")
        return samples
    data = as_bytes(samples, "PCM16 audio")
    if len(data) % 2:
        raise CodecError(f"PCM16 bytes must have even length, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


def mulaw_decode(data: Buffer) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to a new int16 array, one sample per byte."""
    return _DECODE[np.frombuffer(as_bytes(data, "mu-law audio"), dtype=np.uint8)]


def mulaw_encode(samples: npt.NDArray[np.int16] | Buffer) -> bytes:
    """Encode int16 samples (or little-endian PCM16 bytes) to mu-law bytes."""
    return _ENCODE[as_pcm16(samples).view(np.uint16)].tobytes()


def check_rate(rate: object) -> int:
    """Return ``rate`` if it is one of ``SUPPORTED_RATES``, else raise ``CodecError``."""
    if type(rate) is not int or rate not in SUPPORTED_RATES:
        raise CodecError(f"unsupported sample rate {rate!r} (supported: {SUPPORTED_RATES})")
    return rate


def _to_int16(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    # soxr's own int16 output dithers (randomly), so convert here: round and clip.
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def _check_quality(quality: object) -> str:
    if quality not in QUALITIES:
        raise CodecError(f"unknown resampling quality {quality!r} (expected one of {QUALITIES})")
    return str(quality)


def resample(
    samples: npt.NDArray[np.int16] | Buffer, from_rate: int, to_rate: int, quality: str = "HQ"
) -> npt.NDArray[np.int16]:
    """Resample a whole signal; the result has ``len * to_rate / from_rate`` samples."""
    pcm = as_pcm16(samples)
    _check_quality(quality)
    if check_rate(from_rate) == check_rate(to_rate):
        return pcm.copy()
    return _to_int16(soxr.resample(pcm.astype(np.float32), from_rate, to_rate, quality=quality))


class Resampler:
    """Streaming resampler for one continuous signal cut into chunks.

    Call ``process(chunk)`` per chunk and ``process(last_chunk, last=True)``
    at the end, which flushes the filter's delay line and makes the resampler
    ready for a fresh signal. Output comes in bursts: soxr works in blocks, so
    at "HQ" a 20 ms chunk yields nothing for three chunks, then ~60 ms at once.
    Only "QQ" (cubic interpolation, audible aliasing) returns audio per chunk.
    """

    def __init__(self, from_rate: int, to_rate: int, quality: str = "HQ") -> None:
        self.from_rate = check_rate(from_rate)
        self.to_rate = check_rate(to_rate)
        self._stream = soxr.ResampleStream(
            from_rate, to_rate, 1, dtype="float32", quality=_check_quality(quality)
        )

    def process(
        self, samples: npt.NDArray[np.int16] | Buffer, last: bool = False
    ) -> npt.NDArray[np.int16]:
        """Resample the next chunk; ``last=True`` ends the signal."""
        pcm = as_pcm16(samples)
        if self.from_rate == self.to_rate:
            return pcm.copy()
        out = _to_int16(self._stream.resample_chunk(pcm.astype(np.float32), last=last))
        if last:
            self._stream.clear()
        return out

    def reset(self) -> None:
        """Forget buffered input (e.g. after a barge-in) without flushing it."""
        self._stream.clear()


class Framer:
    """Cut a byte stream into fixed-size frames (160 bytes = 20 ms by default).

    ``push`` returns every frame completed by the new bytes and holds the
    remainder (fewer than ``frame_bytes``); ``flush`` pads and returns that
    remainder; ``clear`` discards it.
    """

    __slots__ = ("_buffer", "frame_bytes")

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if type(frame_bytes) is not int or frame_bytes <= 0:
            raise CodecError(f"frame size must be a positive int, got {frame_bytes!r}")
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Number of bytes held back, waiting to complete a frame."""
        return len(self._buffer)

    def push(self, data: Buffer) -> list[bytes]:
        """Add bytes; return the frames they complete, oldest first."""
        chunk = as_bytes(data, "audio to frame")
        size = self.frame_bytes
        buf = self._buffer
        if not buf and len(chunk) == size:  # the common case: already a frame
            return [bytes(chunk)]
        buf += chunk
        whole = len(buf) - len(buf) % size
        if not whole:
            return []
        with memoryview(buf) as view:
            frames = [bytes(view[i : i + size]) for i in range(0, whole, size)]
        # Only the tail (< one frame) moves; bytearray trims its head in place.
        del buf[:whole]
        return frames

    def flush(self, pad: int = MULAW_SILENCE) -> bytes | None:
        """Return the held partial frame padded with ``pad``, or None if empty."""
        if type(pad) is not int or not 0 <= pad <= 0xFF:
            raise CodecError(f"pad must be a byte value 0..255, got {pad!r}")
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + bytes([pad]) * (self.frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame

    def clear(self) -> int:
        """Discard the held partial frame; return how many bytes were dropped."""
        dropped = len(self._buffer)
        self._buffer.clear()
        return dropped


def frames_of(
    data: Buffer, frame_bytes: int = FRAME_BYTES, pad: int = MULAW_SILENCE
) -> list[bytes]:
    """Cut a whole clip into frames, padding the last one with ``pad``."""
    framer = Framer(frame_bytes)
    frames = framer.push(data)
    tail = framer.flush(pad)
    if tail is not None:
        frames.append(tail)
    return frames
