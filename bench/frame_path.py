"""Per-frame cost of the pure path: parse -> policy -> serialize, and the codec.

Every figure is microseconds of one core per 20 ms frame (the median of
several rounds), measured on a ``CallBridge`` fed real wire text, the way a
call actor feeds it:

- caller -> model: a Twilio ``media`` frame in, an ``input_audio_buffer.append`` out;
- model -> caller: ``response.output_audio.delta`` text in (100 ms per delta,
  as the service sends), 20 ms ``media`` frames and marks out, per frame;
- the mark echo: Twilio's ``mark`` in, the playback acknowledgement applied.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

from switchboard.bridge import CallBridge
from switchboard.call_policy import PolicyConfig
from switchboard.codec import FRAME_BYTES, Resampler, mulaw_decode, mulaw_encode
from switchboard.dtmf import DtmfDetector
from switchboard.level_meter import LevelMeter
from switchboard.session_config import SessionConfig

__all__ = ["run_frame_path"]

ROUNDS = 7
STREAM = "MZ" + "0" * 32


def _per_op_us(step: Callable[[int], object], count: int) -> float:
    """Median over rounds of the time per call of ``step(i)``, in microseconds."""
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for i in range(count):
            step(i)
        samples.append((time.perf_counter_ns() - start) / count / 1000)
    return statistics.median(samples)


def _live_bridge() -> CallBridge:
    bridge = CallBridge(PolicyConfig(session=SessionConfig(instructions="Benchmark.")))
    bridge.open(0.0)
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM,
        "start": {
            "streamSid": STREAM,
            "accountSid": "AC" + "0" * 32,
            "callSid": "CA" + "0" * 32,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    bridge.receive_twilio(json.dumps(start), 0.0)
    bridge.receive_realtime(
        json.dumps(
            {
                "type": "session.updated",
                "event_id": "e1",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {"format": {"type": "audio/pcmu"}},
                        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                    },
                },
            }
        ),
        0.0,
    )
    bridge.receive_realtime(
        json.dumps(
            {
                "type": "response.created",
                "event_id": "e2",
                "response": {
                    "id": "resp_1",
                    "object": "realtime.response",
                    "status": "in_progress",
                },
            }
        ),
        0.0,
    )
    bridge.twilio_data_to_send()
    bridge.realtime_data_to_send()
    return bridge


def _media(seq: int, payload: str) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": "inbound",
                "chunk": str(seq),
                "timestamp": str(seq * 20),
                "payload": payload,
            },
            "streamSid": STREAM,
        }
    )


def run_frame_path() -> dict[str, float]:
    rng = np.random.default_rng(7)
    speech = mulaw_encode((rng.standard_normal(8000) * 3000).astype(np.int16))
    payload = base64.b64encode(speech[:FRAME_BYTES]).decode()
    results: dict[str, float] = {}

    bridge = _live_bridge()
    frames = [_media(i + 2, payload) for i in range(2000)]

    def inbound(i: int) -> None:
        bridge.receive_twilio(frames[i], 0.02 * i)
        bridge.realtime_data_to_send()

    results["caller -> model (media in, append out)"] = _per_op_us(inbound, len(frames))

    bridge = _live_bridge()
    delta_b64 = base64.b64encode(speech[: 5 * FRAME_BYTES]).decode()  # 100 ms
    deltas = [
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": f"ev{i}",
                "response_id": "resp_1",
                "item_id": "item_1",
                "output_index": 0,
                "content_index": 0,
                "delta": delta_b64,
            }
        )
        for i in range(400)
    ]

    def outbound(i: int) -> None:
        bridge.receive_realtime(deltas[i], 0.1 * i)
        bridge.twilio_data_to_send()

    results["model -> caller (delta in, media+mark out)"] = _per_op_us(outbound, len(deltas)) / 5

    marks = [
        json.dumps(
            {
                "event": "mark",
                "sequenceNumber": str(i + 2),
                "streamSid": STREAM,
                "mark": {"name": f"sb:{i + 1}"},
            }
        )
        for i in range(250)
    ]

    def echo_round() -> float:
        """250 echoes of marks the bridge sent (one per 100 ms delta, so per 5 frames)."""
        bridge = _live_bridge()
        for i in range(400):
            bridge.receive_realtime(deltas[i], 0.0)
        bridge.twilio_data_to_send()
        start = time.perf_counter_ns()
        for i in range(250):
            bridge.receive_twilio(marks[i], 0.1 * i)
        return (time.perf_counter_ns() - start) / 250 / 1000

    echo_us = statistics.median(echo_round() for _ in range(ROUNDS))
    results["mark echo (mark in, playback acknowledged)"] = echo_us / 5

    pcm = mulaw_decode(speech[:FRAME_BYTES])
    up = Resampler(8000, 24000)
    down = Resampler(24000, 8000)
    pcm24 = up.process(np.tile(pcm, 3))
    detector = DtmfDetector()
    meter = LevelMeter()
    frame = speech[:FRAME_BYTES]
    results["codec: mu-law decode"] = _per_op_us(lambda i: mulaw_decode(frame), 5000)
    results["codec: mu-law encode"] = _per_op_us(lambda i: mulaw_encode(pcm), 5000)
    results["codec: resample 8 -> 24 kHz (streaming)"] = _per_op_us(lambda i: up.process(pcm), 2000)
    results["codec: resample 24 -> 8 kHz (streaming)"] = _per_op_us(
        lambda i: down.process(pcm24[: 3 * len(pcm)]), 2000
    )
    results["codec: DTMF detection"] = _per_op_us(lambda i: detector.feed(pcm), 2000)
    results["codec: level meter"] = _per_op_us(lambda i: meter.feed_mulaw(frame), 5000)
    return results
