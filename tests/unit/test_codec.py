"""G.711 mu-law, resampling and framing (switchboard.codec)."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from switchboard.codec import (
    BYTES_PER_MS,
    FRAME_BYTES,
    FRAME_MS,
    MULAW_SILENCE,
    SAMPLE_RATE,
    Framer,
    Resampler,
    as_pcm16,
    frames_of,
    mulaw_decode,
    mulaw_encode,
    resample,
)
from switchboard.errors import CodecError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # independent C implementation, the oracle (removed in 3.13)

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
int16_arrays = hnp.arrays(np.int16, st.integers(0, 400))


def test_constants_describe_twilio_audio() -> None:
    assert (SAMPLE_RATE, FRAME_MS, BYTES_PER_MS, FRAME_BYTES) == (8000, 20, 8, 160)
    assert mulaw_decode(bytes([MULAW_SILENCE]))[0] == 0


# --- G.711 against audioop ---------------------------------------------------


def test_decode_matches_audioop_for_all_256_codes() -> None:
    codes = bytes(range(256))
    decoded = mulaw_decode(codes)
    assert decoded.dtype == np.int16
    assert decoded.tobytes() == audioop.ulaw2lin(codes, 2)


def test_encode_matches_audioop_for_all_65536_samples() -> None:
    assert mulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM.tobytes(), 2)


def test_known_code_points() -> None:
    # Full-scale positive/negative, and both zeros of the G.711 table.
    assert mulaw_decode(b"\x80\x00\xff\x7f").tolist() == [32124, -32124, 0, 0]
    assert mulaw_encode(np.array([32767, -32768, 0], dtype=np.int16)) == b"\x80\x00\xff"


def test_encode_accepts_little_endian_bytes_and_memoryview() -> None:
    samples = np.array([0, 1000, -1000, 32767], dtype=np.int16)
    little = samples.astype("<i2").tobytes()
    assert mulaw_encode(little) == mulaw_encode(samples)
    assert mulaw_encode(memoryview(little)) == mulaw_encode(samples)
    assert mulaw_encode(bytearray(little)) == mulaw_encode(samples)


def test_encode_accepts_non_contiguous_arrays() -> None:
    samples = ALL_PCM[::7]
    assert mulaw_encode(samples) == mulaw_encode(samples.copy())


def test_decode_accepts_bytearray_and_memoryview_and_empty() -> None:
    data = bytes([0, 0x7F, 0x80, 0xFF])
    assert mulaw_decode(bytearray(data)).tolist() == mulaw_decode(data).tolist()
    assert mulaw_decode(memoryview(data)).tolist() == mulaw_decode(data).tolist()
    assert mulaw_decode(b"").size == 0
    assert mulaw_encode(np.zeros(0, dtype=np.int16)) == b""


def test_decoded_array_is_writable_and_not_shared() -> None:
    first = mulaw_decode(b"\x00")
    first[0] = 1
    assert mulaw_decode(b"\x00")[0] == -32124


@given(int16_arrays)
def test_round_trip_is_idempotent_and_within_quantisation(samples: npt.NDArray[np.int16]) -> None:
    encoded = mulaw_encode(samples)
    assert len(encoded) == len(samples)
    decoded = mulaw_decode(encoded)
    assert mulaw_encode(decoded) == encoded
    # mu-law steps grow with magnitude: error under 1/16 of it, plus the finest step.
    error = np.abs(decoded.astype(np.int64) - samples.astype(np.int64))
    assert np.all(error <= np.abs(samples.astype(np.int64)) / 16 + 8)


def test_round_trip_bound_holds_exhaustively() -> None:
    error = np.abs(mulaw_decode(mulaw_encode(ALL_PCM)).astype(np.int64) - ALL_PCM)
    assert np.all(error <= np.abs(ALL_PCM.astype(np.int64)) / 16 + 8)


@given(st.binary(max_size=400))
def test_codes_survive_decode_encode_except_negative_zero(codes: bytes) -> None:
    expected = codes.replace(b"\x7f", b"\xff")  # 0x7F decodes to 0, which encodes as 0xFF
    assert mulaw_encode(mulaw_decode(codes)) == expected


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (b"\x00\x01\x02", "even length, got 3"),
        (np.zeros(4, dtype=np.int32), "dtype int16, got int32"),
        (np.zeros(4, dtype=np.float64), "dtype int16, got float64"),
        (np.zeros((2, 2), dtype=np.int16), "one-dimensional, got 2"),
        ("abcd", "bytes, got str"),
        ([1, 2], "bytes, got list"),
    ],
)
def test_bad_pcm_raises_codec_error_naming_the_problem(bad: object, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        mulaw_encode(bad)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=words):
        as_pcm16(bad)


def test_bad_mulaw_input_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="mu-law audio must be bytes, got ndarray"):
        mulaw_decode(np.zeros(3, dtype=np.uint8))  # type: ignore[arg-type]


# --- resampling --------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int, amplitude: float = 12000) -> npt.NDArray[np.int16]:
    t = np.arange(round(seconds * rate)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(samples: npt.NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


@pytest.mark.parametrize("high", [16000, 24000, 48000])
def test_tone_keeps_frequency_and_energy_through_up_and_down(high: int) -> None:
    original = tone(1000, 0.5, 8000)
    up = resample(original, 8000, high)
    assert up.dtype == np.int16
    assert len(up) == len(original) * high // 8000
    assert peak_hz(up, high) == pytest.approx(1000, abs=high / len(up))
    down = resample(up, high, 8000)
    assert len(down) == len(original)
    assert peak_hz(down, 8000) == pytest.approx(1000, abs=8000 / len(down))
    middle = slice(200, -200)  # skip filter edge effects
    assert rms(down[middle]) == pytest.approx(rms(original[middle]), rel=0.02)
    assert np.max(np.abs(down[middle].astype(int) - original[middle])) < 200


def test_resample_same_rate_is_a_copy() -> None:
    original = tone(440, 0.01, 8000)
    same = resample(original, 8000, 8000)
    assert same.tolist() == original.tolist()
    assert same is not original


def test_resample_accepts_pcm_bytes() -> None:
    original = tone(500, 0.1, 8000)
    assert resample(original.tobytes(), 8000, 16000).tolist() == (
        resample(original, 8000, 16000).tolist()
    )


@pytest.mark.parametrize("rate", [44100, 0, -8000, 8000.0, True, "8000", None])
def test_bad_rate_is_named(rate: object) -> None:
    with pytest.raises(CodecError, match=f"unsupported sample rate {rate!r}"):
        resample(np.zeros(10, dtype=np.int16), rate, 8000)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=f"unsupported sample rate {rate!r}"):
        resample(np.zeros(10, dtype=np.int16), 8000, rate)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=f"unsupported sample rate {rate!r}"):
        Resampler(8000, rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(("src", "dst"), [(8000, 24000), (24000, 8000), (8000, 16000)])
def test_streaming_in_chunks_matches_one_shot(src: int, dst: int) -> None:
    signal = tone(1000, 1.0, src) + tone(300, 1.0, src, 4000)
    streamer = Resampler(src, dst)
    chunk = src // 50  # 20 ms
    pieces = [streamer.process(signal[i : i + chunk]) for i in range(0, len(signal), chunk)]
    pieces.append(streamer.process(np.zeros(0, dtype=np.int16), last=True))
    streamed = np.concatenate(pieces)
    whole = resample(signal, src, dst)
    assert len(streamed) == len(whole) == len(signal) * dst // src
    difference = np.abs(streamed.astype(int) - whole.astype(int))
    assert difference.max() <= 2


def test_resampler_is_reusable_after_last_chunk_and_reset() -> None:
    signal = tone(1000, 0.2, 8000)
    streamer = Resampler(8000, 24000)
    first = streamer.process(signal, last=True)
    second = streamer.process(signal, last=True)
    assert first.tolist() == second.tolist()
    streamer.process(signal[:100])
    streamer.reset()  # drop the buffered 100 samples
    assert streamer.process(signal, last=True).tolist() == first.tolist()


@pytest.mark.parametrize("quality", ["QQ", "LQ", "MQ", "VHQ"])
def test_other_qualities_keep_the_tone(quality: str) -> None:
    original = tone(1000, 0.5, 8000)
    up = resample(original, 8000, 24000, quality=quality)
    assert len(up) == 3 * len(original)
    assert peak_hz(up, 24000) == pytest.approx(1000, abs=24000 / len(up))
    streamer = Resampler(24000, 8000, quality=quality)
    down = np.concatenate([streamer.process(up), streamer.process(up[:0], last=True)])
    assert len(down) == len(original)
    assert peak_hz(down, 8000) == pytest.approx(1000, abs=8000 / len(down))


@pytest.mark.parametrize("quality", ["hq", "best", None])
def test_bad_quality_is_named(quality: object) -> None:
    with pytest.raises(CodecError, match=f"unknown resampling quality {quality!r}"):
        resample(np.zeros(10, dtype=np.int16), 8000, 16000, quality=quality)  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=f"unknown resampling quality {quality!r}"):
        Resampler(8000, 16000, quality=quality)  # type: ignore[arg-type]


def test_resampler_same_rate_passes_through() -> None:
    streamer = Resampler(16000, 16000)
    samples = tone(700, 0.01, 16000)
    assert streamer.process(samples.tobytes()).tolist() == samples.tolist()


def test_resampler_rejects_bad_chunks() -> None:
    with pytest.raises(CodecError, match="dtype int16, got float32"):
        Resampler(8000, 24000).process(np.zeros(8, dtype=np.float32))


# --- framing -----------------------------------------------------------------


def test_exact_frames_pass_straight_through() -> None:
    framer = Framer()
    frame = bytes(range(160))
    assert framer.push(frame) == [frame]
    assert framer.pending == 0
    assert framer.flush() is None


def test_small_chunks_accumulate_into_frames() -> None:
    framer = Framer()
    data = bytes(i % 256 for i in range(500))
    frames: list[bytes] = []
    for i in range(0, 500, 7):
        frames += framer.push(data[i : i + 7])
    assert frames == [data[0:160], data[160:320], data[320:480]]
    assert framer.pending == 20
    tail = framer.flush()
    assert tail == data[480:] + b"\xff" * 140
    assert framer.pending == 0
    assert framer.flush() is None


def test_large_chunk_yields_many_frames_and_keeps_remainder() -> None:
    framer = Framer()
    assert framer.push(b"\x01" * 50) == []
    frames = framer.push(b"\x02" * 600)
    assert frames == [b"\x01" * 50 + b"\x02" * 110] + [b"\x02" * 160] * 3
    assert framer.pending == 10


@given(st.lists(st.binary(max_size=500), max_size=30), st.integers(1, 400))
@example([b"ab", b"cdef"], 4)  # a whole frame's chunk while bytes are held: after them
def test_framing_preserves_bytes_for_any_cut(chunks: list[bytes], size: int) -> None:
    framer = Framer(size)
    frames = [frame for chunk in chunks for frame in framer.push(chunk)]
    assert all(len(frame) == size for frame in frames)
    joined = b"".join(chunks)
    assert b"".join(frames) == joined[: len(joined) - len(joined) % size]
    assert framer.pending == len(joined) % size


def test_flush_pads_with_chosen_byte_and_clear_drops() -> None:
    framer = Framer(4)
    framer.push(b"ab")
    assert framer.flush(pad=0) == b"ab\x00\x00"
    framer.push(bytearray(b"xyz"))
    assert framer.clear() == 3
    assert framer.pending == 0
    assert framer.clear() == 0
    assert framer.push(memoryview(b"1234")) == [b"1234"]


@pytest.mark.parametrize("pad", [-1, 256, 1.0, True])
def test_bad_pad_is_rejected(pad: object) -> None:
    with pytest.raises(CodecError, match="pad must be a byte value"):
        Framer().flush(pad)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -160, 160.0, True])
def test_bad_frame_size_is_rejected(size: object) -> None:
    with pytest.raises(CodecError, match="frame size must be a positive int"):
        Framer(size)  # type: ignore[arg-type]


def test_push_rejects_non_bytes() -> None:
    with pytest.raises(CodecError, match="audio to frame must be bytes, got str"):
        Framer().push("abc")  # type: ignore[arg-type]


def test_frames_of_cuts_and_pads() -> None:
    assert frames_of(b"") == []
    assert frames_of(b"\x00" * 320) == [b"\x00" * 160] * 2
    assert frames_of(b"\x00" * 170) == [b"\x00" * 160, b"\x00" * 10 + b"\xff" * 150]
    assert frames_of(b"abcde", frame_bytes=2, pad=ord("-")) == [b"ab", b"cd", b"e-"]
