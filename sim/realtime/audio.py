"""Audio formats of the Realtime API and the emulator's speech clips.

The GA session has three formats (protocols.md 3.2): ``audio/pcm`` (PCM16
little-endian, 24 kHz only, 48 bytes per ms), ``audio/pcmu`` (G.711 mu-law)
and ``audio/pcma`` (G.711 A-law), both 8 kHz, 8 bytes per ms.

* Input audio is decoded to int16 samples for the VAD (``AudioFormat.decode``).
* Output audio comes from 8 kHz mu-law clips (``sim/clips``): pcmu passes the
  clip through byte for byte, pcma transcodes it, pcm resamples it to 24 kHz
  with soxr (``switchboard.codec.resample``). ``ClipLibrary`` caches each clip
  per format, so a hundred sessions share one conversion.

A-law is not in ``switchboard.codec`` (Twilio only speaks mu-law), so its two
tables live here, built like the codec's mu-law tables from Sun's ``g711.c``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sim.make_clips import CLIPS
from switchboard.codec import mulaw_decode, mulaw_encode, resample

__all__ = [
    "CLIPS_DIR",
    "PCM24K",
    "PCMA",
    "PCMU",
    "AudioFormat",
    "ClipLibrary",
    "Speech",
    "alaw_decode",
    "alaw_encode",
    "format_from_dict",
]

CLIPS_DIR = Path(__file__).resolve().parent.parent / "clips"
AGENT_CLIPS = (
    "agent_greeting",
    "agent_reply_short",
    "agent_reply_long",
    "agent_confirm",
    "agent_still_there",
)
CALLER_CLIPS = tuple(name for name in CLIPS if name.startswith("caller_"))


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code & 0x70) >> 4
    t = (code & 0x0F) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    # Indexed by the int16 bit pattern, like switchboard.codec's mu-law table.
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 3
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    seg_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_ends, magnitude)
    step = np.where(seg < 2, magnitude >> 1, magnitude >> np.maximum(seg, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | step)
    return (code ^ mask).astype(np.uint8)


_ALAW_DECODE = _alaw_decode_table()
_ALAW_ENCODE = _alaw_encode_table()


def alaw_decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to int16 samples."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 samples to A-law bytes."""
    return _ALAW_ENCODE[np.ascontiguousarray(samples, dtype=np.int16).view(np.uint16)].tobytes()


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One of the three GA audio formats."""

    type: str
    rate: int

    @property
    def bytes_per_ms(self) -> int:
        return 48 if self.type == "audio/pcm" else 8

    @property
    def sample_bytes(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    def to_dict(self) -> dict[str, object]:
        """The wire shape: G.711 formats carry no ``rate`` (protocols.md 3.2)."""
        if self.type == "audio/pcm":
            return {"type": "audio/pcm", "rate": self.rate}
        return {"type": self.type}

    def decode(self, data: bytes) -> npt.NDArray[np.int16]:
        """Whole samples of ``data`` as int16 (an odd trailing PCM byte is ignored)."""
        if self.type == "audio/pcmu":
            return mulaw_decode(data)
        if self.type == "audio/pcma":
            return alaw_decode(data)
        usable = len(data) - len(data) % 2
        return np.frombuffer(data, dtype="<i2", count=usable // 2).astype(np.int16, copy=False)

    def ms(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms


PCM24K = AudioFormat("audio/pcm", 24000)
PCMU = AudioFormat("audio/pcmu", 8000)
PCMA = AudioFormat("audio/pcma", 8000)


def format_from_dict(data: object) -> AudioFormat:
    """The format of a (validated) ``{"type": ...}`` object; pcm is always 24 kHz."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "audio/pcmu":
        return PCMU
    if kind == "audio/pcma":
        return PCMA
    return PCM24K


@dataclass(frozen=True, slots=True)
class Speech:
    """A reply's audio (8 kHz mu-law) and the words it says."""

    name: str
    text: str
    mulaw: bytes

    @property
    def duration_ms(self) -> int:
        return len(self.mulaw) // 8


class ClipLibrary:
    """Loads clips once and converts them to each output format once."""

    def __init__(self, folder: Path = CLIPS_DIR) -> None:
        self.folder = folder
        self._raw: dict[Path, bytes] = {}
        self._encoded: dict[tuple[bytes, AudioFormat], bytes] = {}
        self._filler: bytes | None = None

    def load(self, path: Path) -> bytes:
        if path not in self._raw:
            self._raw[path] = path.read_bytes()
        return self._raw[path]

    def named(self, name: str) -> Speech:
        """A built-in clip with the text ``sim/make_clips.py`` spoke for it."""
        return Speech(name, CLIPS[name][2], self.load(self.folder / f"{name}.ulaw"))

    def default_reply(self, index: int) -> Speech:
        """The n-th reply when no scenario says otherwise: the agent clips in turn."""
        return self.named(AGENT_CLIPS[index % len(AGENT_CLIPS)])

    def speech_for(self, text: str, clip: Path | None) -> Speech:
        """Audio for a scripted line: its clip, or real speech cut to the text's length.

        Without a clip (there is no TTS offline) the line is voiced by a slice
        of the agent clips, about 330 ms per word, chosen by a hash of the text
        so the same line always sounds the same.
        """
        if clip is not None:
            return Speech(clip.stem, text, self.load(clip))
        if self._filler is None:
            self._filler = b"".join(self.named(name).mulaw for name in AGENT_CLIPS)
        filler = self._filler
        nbytes = min(max(len(text.split()) * 330 + 300, 800), 20_000) * 8
        digest = hashlib.sha256(text.encode()).digest()
        start = int.from_bytes(digest[:4], "big") % len(filler)
        audio = (filler[start:] + filler)[:nbytes]
        while len(audio) < nbytes:
            audio += filler[: nbytes - len(audio)]
        return Speech("synthetic", text, _fade(audio))

    def encode(self, mulaw: bytes, fmt: AudioFormat) -> bytes:
        """``mulaw`` (8 kHz) in ``fmt``; cached, since every session replays the same clips."""
        if fmt == PCMU:
            return mulaw
        key = (mulaw, fmt)
        cached = self._encoded.get(key)
        if cached is None:
            pcm = mulaw_decode(mulaw)
            if fmt == PCMA:
                cached = alaw_encode(pcm)
            else:
                cached = resample(pcm, 8000, fmt.rate).astype("<i2").tobytes()
            self._encoded[key] = cached
        return cached


def _fade(mulaw: bytes, ms: int = 10) -> bytes:
    # A slice cut mid-word would click; ramp 10 ms in and out.
    pcm = mulaw_decode(mulaw).astype(np.float32)
    n = min(ms * 8, len(pcm) // 2)
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    pcm[:n] *= ramp
    pcm[len(pcm) - n :] *= ramp[::-1]
    return mulaw_encode(pcm.astype(np.int16))
