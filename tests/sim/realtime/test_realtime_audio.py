"""Audio formats and the clip library, with stdlib audioop as the G.711 oracle."""

from __future__ import annotations

import audioop

import numpy as np
import pytest

from sim.realtime.audio import (
    PCM24K,
    PCMA,
    PCMU,
    ClipLibrary,
    alaw_decode,
    alaw_encode,
    format_from_dict,
)
from sim.testing_realtime import clip_bytes as clip
from switchboard.codec import mulaw_decode


def test_alaw_decode_matches_audioop() -> None:
    codes = bytes(range(256))
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_alaw_encode_matches_audioop_for_every_sample() -> None:
    samples = np.arange(-32768, 32768, dtype=np.int16)
    assert alaw_encode(samples) == audioop.lin2alaw(samples.tobytes(), 2)


@pytest.mark.parametrize(
    ("data", "fmt", "wire"),
    [
        ({"type": "audio/pcmu"}, PCMU, {"type": "audio/pcmu"}),
        ({"type": "audio/pcma"}, PCMA, {"type": "audio/pcma"}),
        ({"type": "audio/pcm", "rate": 24000}, PCM24K, {"type": "audio/pcm", "rate": 24000}),
        ({"type": "audio/pcm"}, PCM24K, {"type": "audio/pcm", "rate": 24000}),
    ],
)
def test_formats(data: dict[str, object], fmt: object, wire: dict[str, object]) -> None:
    parsed = format_from_dict(data)
    assert parsed == fmt
    assert parsed.to_dict() == wire


def test_bytes_per_ms() -> None:
    assert (PCMU.bytes_per_ms, PCMA.bytes_per_ms, PCM24K.bytes_per_ms) == (8, 8, 48)


def test_pcm_decode_ignores_a_dangling_byte() -> None:
    assert PCM24K.decode(b"\x01\x00\x02").tolist() == [1]


def test_encode_keeps_duration_in_every_format() -> None:
    lib = ClipLibrary()
    speech = lib.named("agent_reply_short")
    assert lib.encode(speech.mulaw, PCMU) == speech.mulaw
    assert len(lib.encode(speech.mulaw, PCMA)) == len(speech.mulaw)
    assert len(lib.encode(speech.mulaw, PCM24K)) == len(speech.mulaw) * 3 * 2
    assert lib.encode(speech.mulaw, PCMA) == audioop.lin2alaw(audioop.ulaw2lin(speech.mulaw, 2), 2)


def test_default_replies_rotate_the_agent_clips_with_their_text() -> None:
    lib = ClipLibrary()
    names = [lib.default_reply(i).name for i in range(6)]
    assert names[0] == names[5] == "agent_greeting"
    assert len(set(names[:5])) == 5
    assert lib.default_reply(1).text == "Sure, I can help with that."
    assert lib.default_reply(1).mulaw == clip("agent_reply_short")


def test_speech_without_a_clip_is_real_audio_sized_to_the_text() -> None:
    lib = ClipLibrary()
    short = lib.speech_for("Yes.", None)
    long = lib.speech_for(
        "We can see you on Monday at four in the afternoon, does that work?", None
    )
    assert short.duration_ms < long.duration_ms
    assert lib.speech_for("Yes.", None) == short  # deterministic
    rms = float(np.sqrt(np.mean(mulaw_decode(long.mulaw).astype(np.float64) ** 2)))
    assert rms > 300  # speech, not silence
