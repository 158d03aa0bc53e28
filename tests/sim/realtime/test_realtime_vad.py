"""The energy VAD on its own: the threshold mapping and timeline offsets."""

from __future__ import annotations

import numpy as np
import pytest

from sim.realtime.audio import alaw_decode, alaw_encode
from sim.realtime.vad import EnergyVad, SpeechStarted, SpeechStopped, VadSettings, threshold_dbfs
from sim.testing_realtime import clip_bytes as clip
from switchboard.codec import mulaw_decode, resample


def tone(ms: int, dbfs: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    amplitude = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    wave: np.ndarray = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return wave


def silence(ms: int, rate: int = 8000) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


@pytest.mark.parametrize(
    ("threshold", "dbfs"), [(0.0, -60.0), (0.5, -40.0), (1.0, -20.0), (2.0, -20.0)]
)
def test_threshold_maps_linearly_to_dbfs(threshold: float, dbfs: float) -> None:
    assert threshold_dbfs(threshold) == dbfs


@pytest.mark.parametrize(("level", "detected"), [(-45.0, False), (-35.0, True)])
def test_default_threshold_separates_levels(level: float, detected: bool) -> None:
    vad = EnergyVad(VadSettings(0.5, 300, 500), 8000)
    events = vad.push(np.concatenate([silence(500), tone(400, level), silence(600)]))
    assert bool(events) is detected


def test_offsets_include_prefix_padding_and_silence() -> None:
    vad = EnergyVad(VadSettings(0.5, 300, 500), 8000)
    events = vad.push(np.concatenate([silence(1000), tone(700, -20), silence(800)]))
    assert events == [SpeechStarted(700), SpeechStopped(1000 + 700 + 500)]


def test_start_never_precedes_the_floor() -> None:
    vad = EnergyVad(VadSettings(0.5, 300, 200), 8000)
    assert vad.push(np.concatenate([silence(100), tone(200, -20)]))[0] == SpeechStarted(0)


def test_a_click_shorter_than_the_onset_is_ignored() -> None:
    vad = EnergyVad(VadSettings(0.5, 300, 200), 8000)
    assert vad.push(np.concatenate([silence(200), tone(10, -10), silence(500)])) == []


def test_chunking_does_not_change_the_result() -> None:
    audio = np.concatenate([silence(330), tone(517, -25), silence(900)])
    whole = EnergyVad(VadSettings(0.5, 300, 500), 8000).push(audio)
    vad = EnergyVad(VadSettings(0.5, 300, 500), 8000)
    pieces = [vad.push(audio[i : i + 37]) for i in range(0, len(audio), 37)]
    assert [e for p in pieces for e in p] == whole


def test_pauses_shorter_than_silence_duration_keep_one_turn() -> None:
    speech = mulaw_decode(clip("caller_hello"))  # has a ~380 ms pause after "Hello?"
    audio = np.concatenate([silence(500), speech, silence(1000)])
    long_window = EnergyVad(VadSettings(0.5, 300, 500), 8000).push(audio)
    short_window = EnergyVad(VadSettings(0.5, 300, 200), 8000).push(audio)
    assert [type(e) for e in long_window] == [SpeechStarted, SpeechStopped]
    assert len(short_window) == 4


@pytest.mark.parametrize("rate", [8000, 24000])
def test_real_speech_at_both_rates(rate: int) -> None:
    speech = mulaw_decode(clip("caller_question"))
    audio = np.concatenate([silence(1000), speech, silence(1000)])
    if rate != 8000:
        audio = resample(audio, 8000, rate)
    events = EnergyVad(VadSettings(0.5, 300, 500), rate).push(audio)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    start, stop = events[0].audio_start_ms, events[1].audio_end_ms  # type: ignore[union-attr]
    assert 700 - 10 <= start <= 700 + 30
    speech_end = 1000 + len(speech) // 8
    assert speech_end < stop <= speech_end + 500 + 20


def test_alaw_round_trip_keeps_speech_detectable() -> None:
    speech = mulaw_decode(clip("caller_yes"))
    decoded = alaw_decode(alaw_encode(np.concatenate([silence(500), speech, silence(800)])))
    events = EnergyVad(VadSettings(0.5, 300, 500), 8000).push(decoded)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_reset_forgets_speech_in_progress() -> None:
    vad = EnergyVad(VadSettings(0.5, 300, 500), 8000)
    assert vad.push(tone(200, -20))
    vad.reset(floor_ms=200)
    assert not vad.speaking
    assert vad.push(silence(1000)) == []
