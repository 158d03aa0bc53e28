"""One emulator process carries a hundred concurrent sessions."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets

from sim.testing_realtime import clip_bytes, run_realtime_emulator

pytestmark = pytest.mark.integration

SESSIONS = 100
UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                },
                "output": {"format": {"type": "audio/pcmu"}},
            },
        },
    }
)


async def one_call(url: str, turn: list[str]) -> tuple[str, int]:
    headers = {"Authorization": "Bearer sk-test"}
    async with websockets.connect(url, additional_headers=headers, compression=None) as ws:
        session_id = json.loads(await ws.recv())["session"]["id"]
        await ws.send(UPDATE)
        for chunk in turn:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        audio = 0
        async with asyncio.timeout(60):
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "response.output_audio.delta":
                    audio += len(base64.b64decode(event["delta"]))
                if event["type"] == "response.done":
                    assert event["response"]["status"] == "completed"
                    return session_id, audio
    raise AssertionError("connection closed before response.done")


async def test_a_hundred_concurrent_calls() -> None:
    audio = b"\xff" * 2400 + clip_bytes("caller_yes") + b"\xff" * 6400
    turn = [base64.b64encode(audio[i : i + 800]).decode() for i in range(0, len(audio), 800)]
    async with run_realtime_emulator(first_audio_ms=50, speed=20.0, validate=False) as emu:
        url = f"{emu.websocket_base_url}/realtime?model=gpt-realtime"
        results = await asyncio.gather(*(one_call(url, turn) for _ in range(SESSIONS)))
        stats = emu.stats()
    assert len({session_id for session_id, _ in results}) == SESSIONS
    assert {size for _, size in results} == {len(clip_bytes("agent_greeting"))}
    assert stats.sessions_total == SESSIONS
    assert stats.deltas == SESSIONS * -(-len(clip_bytes("agent_greeting")) // 800)
    assert stats.frames_in == SESSIONS * (1 + len(turn))
    assert stats.cpu_sessions_s > 0
