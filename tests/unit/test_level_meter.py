"""Audio level metering (switchboard.level_meter)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from switchboard.codec import MULAW_SILENCE, mulaw_decode, mulaw_encode
from switchboard.errors import CodecError
from switchboard.level_meter import FLOOR_DBFS, LevelMeter


def sine(amplitude: float, samples: int = 160, freq: float = 1000) -> npt.NDArray[np.int16]:
    t = np.arange(samples) / 8000
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    meter = LevelMeter()
    assert meter.feed_pcm(sine(32767, 800)) == pytest.approx(-3.01, abs=0.02)
    assert meter.rms_dbfs == pytest.approx(-3.01, abs=0.02)
    assert meter.peak_dbfs == pytest.approx(0.0, abs=0.01)


def test_full_scale_square_is_0_dbfs() -> None:
    square = np.array([32767, -32768] * 80, dtype=np.int16)
    assert LevelMeter().feed_pcm(square) == pytest.approx(0.0, abs=0.001)


@pytest.mark.parametrize("db", [-6, -20, -40, -60])
def test_sine_level_follows_amplitude(db: float) -> None:
    amplitude = 32767 * 10 ** (db / 20)
    assert LevelMeter().feed_pcm(sine(amplitude, 1600)) == pytest.approx(db - 3.01, abs=0.1)


def test_silence_reads_the_floor() -> None:
    meter = LevelMeter()
    assert meter.feed_mulaw(bytes([MULAW_SILENCE]) * 160) == FLOOR_DBFS
    assert meter.peak_dbfs == meter.level_dbfs == FLOOR_DBFS
    assert LevelMeter(floor_dbfs=-70).feed_pcm(np.zeros(160, dtype=np.int16)) == -70


def test_one_lsb_is_above_a_low_floor_but_clamped_by_a_high_one() -> None:
    lsb = np.ones(160, dtype=np.int16)
    assert LevelMeter().feed_pcm(lsb) == pytest.approx(20 * math.log10(1 / 32768))
    assert LevelMeter(floor_dbfs=-60).feed_pcm(lsb) == -60


def test_mulaw_and_pcm_agree_on_the_decoded_signal() -> None:
    signal = sine(9000, 160)
    by_mulaw, by_pcm = LevelMeter(), LevelMeter()
    encoded = mulaw_encode(signal)
    by_mulaw.feed_mulaw(encoded)
    by_pcm.feed_pcm(mulaw_decode(encoded))
    assert by_mulaw.rms_dbfs == pytest.approx(by_pcm.rms_dbfs, abs=1e-9)
    assert by_mulaw.peak_dbfs == pytest.approx(by_pcm.peak_dbfs, abs=1e-9)
    assert by_mulaw.level_dbfs == pytest.approx(by_pcm.level_dbfs, abs=1e-9)
    assert by_mulaw.rms_dbfs == pytest.approx(LevelMeter().feed_pcm(signal), abs=0.1)


def test_peak_is_the_largest_sample() -> None:
    samples = np.zeros(160, dtype=np.int16)
    samples[37] = -16384
    meter = LevelMeter()
    meter.feed_pcm(samples)
    assert meter.peak_dbfs == pytest.approx(-6.02, abs=0.01)
    assert meter.rms_dbfs == pytest.approx(20 * math.log10(16384 / math.sqrt(160) / 32768))


def test_attack_is_fast_and_release_slow() -> None:
    meter = LevelMeter(attack_frames=1, release_frames=10)
    loud = sine(23170, 160)  # -3 dBFS peak, -6 dBFS RMS
    rms = 23170 / math.sqrt(2)
    meter.feed_pcm(loud)
    assert meter.level_dbfs == pytest.approx(
        20 * math.log10(rms * (1 - math.exp(-1)) / 32768), abs=0.001
    )
    for _ in range(9):
        meter.feed_pcm(loud)
    assert meter.level_dbfs == pytest.approx(meter.rms_dbfs, abs=0.01)
    held = meter.level_dbfs
    meter.feed_pcm(np.zeros(160, dtype=np.int16))
    # Release: the amplitude decays by e^(-1/10) per frame, i.e. 0.87 dB.
    assert meter.level_dbfs == pytest.approx(held - 2 / math.log(10), abs=0.001)
    assert meter.rms_dbfs == FLOOR_DBFS


def test_elapsed_time_comes_from_sample_count_not_calls() -> None:
    whole, pieces = LevelMeter(), LevelMeter()
    loud = sine(20000, 800)
    whole.feed_pcm(loud)
    for i in range(0, 800, 160):
        pieces.feed_pcm(loud[i : i + 160])
    assert whole.frames == pieces.frames == 5
    # Same duration, same RMS per piece (whole cycles): same smoothed level.
    assert whole.level_dbfs == pytest.approx(pieces.level_dbfs, abs=0.05)


def test_wideband_rate_counts_frames_by_its_own_clock() -> None:
    meter = LevelMeter(rate=24000)
    meter.feed_pcm(np.zeros(480, dtype=np.int16))
    assert meter.frames == 1


def test_is_speaking_uses_the_smoothed_level() -> None:
    meter = LevelMeter(attack_frames=1, release_frames=5)
    assert not meter.is_speaking()
    voice = sine(3000, 160)  # about -23 dBFS RMS
    meter.feed_pcm(voice)
    meter.feed_pcm(voice)
    assert meter.is_speaking(-30)
    assert not meter.is_speaking(-20)
    quiet = np.zeros(160, dtype=np.int16)
    meter.feed_pcm(quiet)
    assert meter.is_speaking(-30)  # release holds the level up for a moment
    for _ in range(20):
        meter.feed_pcm(quiet)
    assert not meter.is_speaking(-30)


def test_empty_chunks_change_nothing() -> None:
    meter = LevelMeter()
    meter.feed_pcm(sine(10000))
    before = (meter.rms_dbfs, meter.peak_dbfs, meter.level_dbfs, meter.frames)
    assert meter.feed_mulaw(b"") == before[0]
    assert meter.feed_pcm(np.zeros(0, dtype=np.int16)) == before[0]
    assert (meter.rms_dbfs, meter.peak_dbfs, meter.level_dbfs, meter.frames) == before


def test_reset() -> None:
    meter = LevelMeter()
    meter.feed_pcm(sine(10000))
    meter.reset()
    assert (meter.rms_dbfs, meter.peak_dbfs, meter.level_dbfs, meter.frames) == (
        FLOOR_DBFS,
        FLOOR_DBFS,
        FLOOR_DBFS,
        0,
    )


def test_feeds_accept_bytes_like() -> None:
    meter = LevelMeter()
    assert meter.feed_mulaw(bytearray(b"\x00" * 160)) == pytest.approx(
        LevelMeter().feed_mulaw(memoryview(b"\x00" * 160))
    )
    assert meter.feed_pcm(sine(1000).tobytes()) == pytest.approx(LevelMeter().feed_pcm(sine(1000)))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"attack_frames": 0}, "attack_frames must be > 0, got 0"),
        ({"release_frames": -1}, "release_frames must be > 0, got -1"),
        ({"release_frames": float("nan")}, "release_frames must be > 0, got nan"),
        ({"floor_dbfs": 0.0}, "floor_dbfs must be < 0, got 0.0"),
        ({"floor_dbfs": "-96"}, "floor_dbfs must be < 0, got '-96'"),
        ({"attack_frames": None}, "attack_frames must be > 0, got None"),
        ({"rate": 22050}, "unsupported sample rate 22050"),
    ],
)
def test_bad_settings(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(CodecError, match=words):
        LevelMeter(**kwargs)  # type: ignore[arg-type]


def test_bad_input() -> None:
    meter = LevelMeter()
    with pytest.raises(CodecError, match="mu-law audio must be bytes, got str"):
        meter.feed_mulaw("abc")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="dtype int16, got uint8"):
        meter.feed_pcm(np.zeros(3, dtype=np.uint8))
    with pytest.raises(CodecError, match="even length, got 5"):
        meter.feed_pcm(b"abcde")
