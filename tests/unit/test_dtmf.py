"""In-band DTMF generation and detection (switchboard.dtmf)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from switchboard.codec import mulaw_decode, mulaw_encode
from switchboard.dtmf import COL_HZ, DIGITS, ROW_HZ, DtmfDetector, dtmf_tone, goertzel_power
from switchboard.errors import CodecError

RATE = 8000


def silence(ms: float, rate: int = RATE) -> npt.NDArray[np.int16]:
    return np.zeros(round(rate * ms / 1000), dtype=np.int16)


def tones(
    freqs_and_amplitudes: list[tuple[float, float]], ms: float, rate: int = RATE
) -> npt.NDArray[np.int16]:
    """Sum of sines; amplitudes as fractions of full scale."""
    t = np.arange(round(rate * ms / 1000)) / rate
    wave = sum(a * np.sin(2 * np.pi * f * t + f) for f, a in freqs_and_amplitudes)
    return np.round(np.asarray(wave) * 32767).astype(np.int16)


def detect(signal: npt.NDArray[np.int16], chunk: int = 160, rate: int = RATE) -> list[str]:
    detector = DtmfDetector(rate)
    found: list[str] = []
    for i in range(0, len(signal), chunk):
        found += detector.feed(signal[i : i + chunk])
    return found


def test_digits_cover_the_keypad() -> None:
    assert sorted(DIGITS) == sorted("0123456789*#ABCD")


@pytest.mark.parametrize("digit", list(DIGITS))
def test_every_digit_is_detected_once(digit: str) -> None:
    signal = np.concatenate([silence(40), dtmf_tone(digit), silence(100)])
    assert detect(signal) == [digit]


@pytest.mark.parametrize("digit", list(DIGITS))
def test_every_digit_survives_mulaw_and_mild_noise(digit: str) -> None:
    rng = np.random.default_rng(ord(digit))
    clean = np.concatenate([silence(60), dtmf_tone(digit, 120), silence(100)])
    noise = rng.normal(0, 300, len(clean))  # about 25 dB below the tones
    noisy = np.clip(clean + noise, -32768, 32767).astype(np.int16)
    over_the_phone = mulaw_decode(mulaw_encode(noisy))
    assert detect(over_the_phone) == [digit]


def test_tone_spectrum_is_the_digit_pair() -> None:
    signal = dtmf_tone("6", 1000).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(signal))
    two_peaks = sorted(np.argsort(spectrum)[-2:].tolist())  # 1 Hz bins over 1 s
    assert two_peaks == [770, 1477]
    assert len(dtmf_tone("6", 1000)) == 8000
    assert int(np.abs(dtmf_tone("6", 1000)).max()) <= 2 * 0.25 * 32767


def test_sequence_with_gaps_is_reported_once_each_in_order() -> None:
    parts = [silence(50)]
    for digit in "123#":
        parts += [dtmf_tone(digit, 100), silence(100)]
    assert detect(np.concatenate(parts)) == list("123#")


def test_chunk_size_does_not_matter() -> None:
    parts = [silence(30)]
    for digit in "9*0D":
        parts += [dtmf_tone(digit, 90), silence(90)]
    signal = np.concatenate(parts)
    expected = list("9*0D")
    assert detect(signal, chunk=1) == expected
    assert detect(signal, chunk=37) == expected
    assert detect(signal, chunk=len(signal)) == expected


def test_long_press_is_one_digit_and_repeated_press_is_two() -> None:
    assert detect(dtmf_tone("5", 2000)) == ["5"]
    press = dtmf_tone("5", 100)
    assert detect(np.concatenate([press, silence(100), press, silence(100)])) == ["5", "5"]


def test_one_bad_block_inside_a_press_does_not_split_it() -> None:
    # A 20 ms dropout: at most one 25.6 ms block misses, so the key stays held.
    signal = np.concatenate([dtmf_tone("7", 150), silence(20), dtmf_tone("7", 150), silence(60)])
    assert detect(signal) == ["7"]


def test_switching_keys_without_a_gap_reports_both() -> None:
    assert detect(np.concatenate([dtmf_tone("1", 150), dtmf_tone("2", 150)])) == ["1", "2"]


@pytest.mark.parametrize("ms", [10, 20, 30, 35])
@pytest.mark.parametrize("offset", [0, 50, 102, 150, 204])
def test_tone_shorter_than_40_ms_is_not_detected(ms: int, offset: int) -> None:
    signal = np.concatenate([np.zeros(offset, dtype=np.int16), dtmf_tone("8", ms), silence(100)])
    assert detect(signal) == []


@pytest.mark.parametrize("offset", [0, 50, 102, 150, 204])
def test_tone_of_70_ms_is_detected_at_any_alignment(offset: int) -> None:
    signal = np.concatenate([np.zeros(offset, dtype=np.int16), dtmf_tone("8", 70), silence(100)])
    assert detect(signal) == ["8"]


@pytest.mark.parametrize("rate", [16000, 24000])
def test_other_rates(rate: int) -> None:
    signal = np.concatenate(
        [dtmf_tone("3", 100, rate), silence(100, rate), dtmf_tone("C", 100, rate)]
    )
    assert detect(signal, chunk=rate // 50, rate=rate) == ["3", "C"]


# --- signals that are not DTMF ------------------------------------------------


def test_silence_is_nothing() -> None:
    assert detect(silence(2000)) == []


def test_white_noise_is_nothing() -> None:
    rng = np.random.default_rng(7)
    noise = np.clip(rng.normal(0, 6000, 16000), -32768, 32767).astype(np.int16)
    assert detect(noise) == []


def test_a_1khz_tone_is_nothing() -> None:
    assert detect(tones([(1000, 0.5)], 2000)) == []


def test_speech_like_harmonics_are_nothing() -> None:
    # A 140 Hz voice: its 5th harmonic (700 Hz) and 6th (840 Hz) sit near rows.
    t = np.arange(16000) / RATE
    pitch = 140 + 10 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = sum(np.sin(k * phase) * 0.3 / k**0.5 for k in range(1, 24))
    assert detect(np.round(np.asarray(voice) * 32767 / 3).astype(np.int16)) == []


def test_a_dtmf_pair_buried_in_other_tones_is_rejected_by_total_energy() -> None:
    # Row and column pass every per-bin check, but carry only a third of the energy.
    pair = [(ROW_HZ[0], 0.1), (COL_HZ[0], 0.1)]
    others = [(f, 0.1) for f in (300.0, 450.0, 2100.0, 2500.0)]
    assert detect(tones(pair + others, 300)) == []
    assert detect(tones(pair, 300)) == ["1"]


def test_quiet_tones_are_below_the_energy_threshold() -> None:
    assert detect(dtmf_tone("1", 200, amplitude=0.005)) == []  # -46 dBFS each
    assert detect(dtmf_tone("1", 200, amplitude=0.03)) == ["1"]  # -30 dBFS each


@pytest.mark.parametrize(
    ("row_amp", "col_amp", "expected"),
    [
        (0.2, 0.2, ["5"]),
        (0.2, 0.2 * 10 ** (3 / 20), ["5"]),  # column 3 dB up: allowed reverse twist
        (0.1, 0.1 * 10 ** (6 / 20), []),  # column 6 dB up: too much reverse twist
        (0.2, 0.2 * 10 ** (-6 / 20), ["5"]),  # column 6 dB down: allowed normal twist
        (0.2, 0.2 * 10 ** (-10 / 20), []),  # column 10 dB down: too much normal twist
    ],
)
def test_twist_limits(row_amp: float, col_amp: float, expected: list[str]) -> None:
    assert detect(tones([(ROW_HZ[1], row_amp), (COL_HZ[1], col_amp)], 200)) == expected


def test_two_rows_or_two_columns_are_rejected() -> None:
    # The second tone is 6 dB down: inside the total-energy limit, not the 8 dB margin.
    assert detect(tones([(ROW_HZ[0], 0.2), (ROW_HZ[2], 0.1), (COL_HZ[0], 0.2)], 200)) == []
    assert detect(tones([(ROW_HZ[0], 0.2), (COL_HZ[1], 0.2), (COL_HZ[3], 0.1)], 200)) == []
    assert detect(tones([(ROW_HZ[0], 0.2), (ROW_HZ[2], 0.05), (COL_HZ[0], 0.2)], 200)) == ["1"]


# --- the Goertzel implementation ----------------------------------------------


def test_matrix_form_equals_textbook_goertzel() -> None:
    detector = DtmfDetector()
    rng = np.random.default_rng(3)
    block = rng.normal(0, 5000, detector.block)
    fast = (block @ detector._basis) ** 2
    for i, freq in enumerate(ROW_HZ + COL_HZ):
        assert fast[i] + fast[i + 8] == pytest.approx(goertzel_power(block, freq, RATE), rel=1e-9)


def test_reset_forgets_held_key() -> None:
    detector = DtmfDetector()
    press = dtmf_tone("4", 100)
    assert detector.feed(press) == ["4"]
    assert detector.feed(press) == []  # no gap: still the same press
    detector.reset()
    assert detector.feed(press) == ["4"]


def test_reset_forgets_buffered_samples() -> None:
    two_blocks = dtmf_tone("4", 1000)[:410]
    control = DtmfDetector()
    assert control.feed(two_blocks[:204]) + control.feed(two_blocks[204:]) == ["4"]
    detector = DtmfDetector()
    assert detector.feed(two_blocks[:204]) == []
    detector.reset()
    assert detector.feed(two_blocks[204:]) == []  # one block left: not enough


def test_feed_accepts_pcm_bytes() -> None:
    assert DtmfDetector().feed(dtmf_tone("B", 100).tobytes()) == ["B"]


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize("digit", ["E", "a", "", "12", 1, None])
def test_bad_digit(digit: object) -> None:
    with pytest.raises(CodecError, match=f"not a DTMF digit: {digit!r}"):
        dtmf_tone(digit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"rate": 11025}, "unsupported sample rate 11025"),
        ({"amplitude": 0.0}, "amplitude must be in"),
        ({"amplitude": 0.6}, "amplitude must be in"),
        ({"duration_ms": -1}, "duration must be >= 0 ms, got -1"),
        ({"duration_ms": float("nan")}, "duration must be >= 0 ms, got nan"),
        ({"duration_ms": "100"}, "duration must be >= 0 ms, got '100'"),
        ({"amplitude": "0.1"}, "amplitude must be in"),
    ],
)
def test_bad_tone_parameters(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(CodecError, match=words):
        dtmf_tone("1", **kwargs)  # type: ignore[arg-type]


def test_zero_duration_is_empty() -> None:
    assert dtmf_tone("1", 0).size == 0


def test_bad_detector_input() -> None:
    with pytest.raises(CodecError, match="unsupported sample rate 44100"):
        DtmfDetector(44100)
    with pytest.raises(CodecError, match="dtype int16, got float64"):
        DtmfDetector().feed(np.zeros(10))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="even length, got 3"):
        DtmfDetector().feed(b"abc")


# The standard keypad (ITU-T Q.23), written out rather than read from the module.
STANDARD_PAIRS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


@pytest.mark.parametrize("digit", list(DIGITS))
def test_tones_and_detection_follow_the_standard_keypad(digit: str) -> None:
    spectrum = np.abs(np.fft.rfft(dtmf_tone(digit, 1000).astype(np.float64)))
    assert tuple(sorted(np.argsort(spectrum)[-2:].tolist())) == STANDARD_PAIRS[digit]
    assert detect(tones([(f, 0.2) for f in STANDARD_PAIRS[digit]], 200)) == [digit]


def test_each_tone_must_reach_minus_38_dbfs() -> None:
    assert detect(dtmf_tone("5", 200, amplitude=10 ** (-40 / 20))) == []
    assert detect(dtmf_tone("5", 200, amplitude=10 ** (-36 / 20))) == ["5"]
    # A loud row does not carry a column below the floor (6 dB twist: allowed).
    assert detect(tones([(ROW_HZ[1], 10 ** (-33 / 20)), (COL_HZ[1], 10 ** (-39 / 20))], 200)) == []
    assert detect(tones([(ROW_HZ[1], 10 ** (-31 / 20)), (COL_HZ[1], 10 ** (-37 / 20))], 200)) == [
        "5"
    ]
