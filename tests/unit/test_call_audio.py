"""Per-call codec state (switchboard.call_audio)."""

from __future__ import annotations

import numpy as np
import pytest

from switchboard.call_audio import CallAudio, CallAudioStats
from switchboard.codec import MULAW_SILENCE, frames_of, mulaw_encode
from switchboard.dtmf import dtmf_tone
from switchboard.errors import CodecError
from switchboard.level_meter import FLOOR_DBFS

SILENT_FRAME = bytes([MULAW_SILENCE]) * 160


def loud_mulaw(samples: int) -> bytes:
    t = np.arange(samples) / 8000
    return mulaw_encode(np.round(16000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))


def test_starts_empty() -> None:
    audio = CallAudio()
    assert audio.stats == CallAudioStats(0, 0, 0, 0, 0)
    assert audio.current_item is None
    assert not audio.detects_dtmf
    assert audio.inbound_level == audio.outbound_level == FLOOR_DBFS


def test_outbound_deltas_become_whole_frames_and_finish_pads() -> None:
    audio = CallAudio()
    delta = loud_mulaw(400)
    assert audio.frame_outbound("item_1", delta[:100]) == []
    assert audio.current_item == "item_1"
    frames = audio.frame_outbound("item_1", delta[100:])
    assert frames == [delta[:160], delta[160:320]]
    tail = audio.finish_item("item_1")
    assert tail == delta[320:] + bytes([MULAW_SILENCE]) * 80
    assert audio.current_item is None
    assert audio.stats == CallAudioStats(
        frames_in=0, bytes_in=0, frames_out=3, bytes_out=480, bytes_dropped=0
    )
    assert audio.outbound_level > -20  # the agent meter heard the model's audio
    assert audio.inbound_level == FLOOR_DBFS


def test_finish_with_nothing_held_or_stale_id_returns_none() -> None:
    audio = CallAudio()
    assert audio.finish_item("never_seen") is None
    audio.frame_outbound("item_1", b"\x00" * 160)
    assert audio.finish_item("item_1") is None  # whole frames only: nothing to pad
    audio.frame_outbound("item_2", b"\x00" * 10)
    assert audio.finish_item("item_1") is None  # stale: item_2 is untouched
    assert audio.current_item == "item_2"
    assert audio.finish_item("item_2") == b"\x00" * 10 + bytes([MULAW_SILENCE]) * 150


def test_drop_item_after_barge_in_discards_partial_frame() -> None:
    audio = CallAudio()
    audio.frame_outbound("item_1", b"\x01" * 250)
    assert audio.drop_item() == 90
    assert audio.current_item is None
    assert audio.finish_item("item_1") is None
    assert audio.drop_item() == 0
    assert audio.stats.bytes_dropped == 90
    assert audio.stats.frames_out == 1


def test_new_item_discards_the_open_items_tail() -> None:
    audio = CallAudio()
    audio.frame_outbound("item_1", b"\x01" * 170)
    frames = audio.frame_outbound("item_2", b"\x02" * 160)
    assert frames == [b"\x02" * 160]  # not mixed with item_1's 10 bytes
    assert audio.current_item == "item_2"
    assert audio.stats.bytes_dropped == 10


def test_inbound_counts_and_meters_the_caller() -> None:
    audio = CallAudio()
    assert audio.inbound(SILENT_FRAME) == []
    assert audio.inbound_level == FLOOR_DBFS
    for frame in frames_of(loud_mulaw(800)):
        assert audio.inbound(frame) == []
    assert audio.inbound_level > -20
    assert audio.outbound_level == FLOOR_DBFS
    assert audio.stats == CallAudioStats(
        frames_in=6, bytes_in=960, frames_out=0, bytes_out=0, bytes_dropped=0
    )


def test_inband_dtmf_is_off_by_default() -> None:
    audio = CallAudio()
    clip = mulaw_encode(np.concatenate([dtmf_tone("5"), np.zeros(800, dtype=np.int16)]))
    assert [d for frame in frames_of(clip) for d in audio.inbound(frame)] == []


def test_inband_dtmf_when_enabled() -> None:
    audio = CallAudio(detect_dtmf=True)
    assert audio.detects_dtmf
    gap = np.zeros(800, dtype=np.int16)
    clip = mulaw_encode(np.concatenate([gap, dtmf_tone("4"), gap, dtmf_tone("2"), gap]))
    digits = [d for frame in frames_of(clip) for d in audio.inbound(frame)]
    assert digits == ["4", "2"]


def test_custom_frame_size() -> None:
    audio = CallAudio(frame_bytes=80)
    assert audio.frame_outbound("item_1", b"\x00" * 160) == [b"\x00" * 80] * 2


def test_bad_input_raises_codec_error() -> None:
    audio = CallAudio()
    with pytest.raises(CodecError, match="inbound mu-law payload must be bytes, got str"):
        audio.inbound("AAAA")  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="outbound mu-law audio must be bytes, got NoneType"):
        audio.frame_outbound("item_1", None)  # type: ignore[arg-type]
    assert audio.current_item is None  # rejected input did not open the item
    with pytest.raises(CodecError, match="frame size must be a positive int"):
        CallAudio(frame_bytes=0)
