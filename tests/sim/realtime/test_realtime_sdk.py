"""The real ``openai`` SDK holds a whole scripted call against the emulator.

Session update to pcmu, caller audio from ``sim/clips`` in 20 ms chunks with
silence around it, VAD events, transcripts, spoken replies, a tool call that
waits for ``function_call_output`` + ``response.create``, a barge-in that
cancels the streaming reply, truncation inside and past the audio, and a
cancel with nothing to cancel.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from openai import AsyncOpenAI

from sim.scenario import parse_scenario
from sim.testing_realtime import assert_valid_server_events, clip_bytes, run_realtime_emulator

pytestmark = pytest.mark.integration

SCENARIO = parse_scenario(
    {
        "name": "dental",
        "caller": [
            {"say": "What times do you have on Monday?", "clip": "caller_question.ulaw"},
            {"say": "Wait, can I ask something first?", "clip": "caller_interrupt.ulaw"},
        ],
        "assistant": [
            {
                "say": "Hello! This is Ava calling from Bright Smiles Dental.",
                "clip": "agent_greeting.ulaw",
            },
            {"tool_call": {"name": "check_availability", "arguments": {"day": "monday"}}},
            {"say": "We have openings on Monday.", "clip": "agent_reply_long.ulaw"},
            {"say": "Perfect, you are booked.", "clip": "agent_confirm.ulaw"},
        ],
    }
)
TOOL = {
    "type": "function",
    "name": "check_availability",
    "description": "Free appointment slots for a day",
    "parameters": {
        "type": "object",
        "properties": {"day": {"type": "string"}},
        "required": ["day"],
    },
}
SESSION: Any = {
    "type": "realtime",
    "instructions": "You book dental appointments.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
    "tools": [TOOL],
}


class Reader:
    """Reads typed events from the SDK connection, keeping all of them."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[Any] = []

    async def until(self, type: str, timeout: float = 10.0) -> list[Any]:
        batch: list[Any] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.conn.recv()
                self.seen.append(event)
                batch.append(event)
                if event.type == type:
                    return batch

    async def next(self, type: str) -> Any:
        return (await self.until(type))[-1]


def frames(audio: bytes) -> list[str]:
    return [base64.b64encode(audio[i : i + 160]).decode() for i in range(0, len(audio), 160)]


def audio_of(events: list[Any], item_id: str | None = None) -> bytes:
    return b"".join(
        base64.b64decode(e.delta)
        for e in events
        if e.type == "response.output_audio.delta" and item_id in (None, e.item_id)
    )


async def test_scripted_conversation_with_tool_call_and_interruption() -> None:
    async with run_realtime_emulator(
        SCENARIO, first_audio_ms=50, speed=5.0, transcription_delay_ms=10
    ) as emu:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=emu.websocket_base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            read = Reader(conn)
            created = await read.next("session.created")
            assert created.session.audio.input.format.type == "audio/pcm"
            await conn.session.update(session=SESSION)
            updated = await read.next("session.updated")
            assert updated.session.audio.output.format.type == "audio/pcmu"
            assert updated.session.tools[0].name == "check_availability"

            # The greeting: real speech, passed through in pcmu.
            await conn.response.create()
            greeting = await read.until("response.done")
            assert audio_of(greeting) == clip_bytes("agent_greeting")
            assert greeting[-1].response.status == "completed"

            # The caller asks; the VAD commits the turn and the model calls the tool.
            question = b"\xff" * 4000 + clip_bytes("caller_question") + b"\xff" * 6400
            for chunk in frames(question):
                await conn.input_audio_buffer.append(audio=chunk)
            turn = await read.until("response.done")
            kinds = [e.type for e in turn]
            for name in (
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "response.function_call_arguments.done",
            ):
                assert name in kinds
            assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
            started = next(e for e in turn if e.type == "input_audio_buffer.speech_started")
            assert 0 < started.audio_start_ms < 500
            call = next(e for e in turn if e.type == "response.function_call_arguments.done")
            assert (call.name, json.loads(call.arguments)) == (
                "check_availability",
                {"day": "monday"},
            )
            assert turn[-1].response.output[0].type == "function_call"
            if not any(e.type.endswith("transcription.completed") for e in read.seen):
                await read.next("conversation.item.input_audio_transcription.completed")
            heard = [e for e in read.seen if e.type.endswith("transcription.completed")]
            assert heard[0].transcript == "What times do you have on Monday?"
            assert heard[0].item_id == started.item_id

            # A wrong call_id is refused; the right one is stored, and nothing follows
            # until the client asks for the next response.
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": "call_bogus", "output": "{}"}
            )
            error = await read.next("error")
            assert "call_bogus" in error.error.message
            result = json.dumps({"slots": ["16:00"]})
            await conn.conversation.item.create(
                item={"type": "function_call_output", "call_id": call.call_id, "output": result}
            )
            stored = await read.next("conversation.item.done")
            assert stored.item.type == "function_call_output"
            session = emu.sessions[0]
            assert len(session.responses) == 2
            await conn.response.create()
            first_delta = await read.next("response.output_audio.delta")
            reply_item = first_delta.item_id

            # Barge-in while the long reply streams: the server cancels it.
            for chunk in frames(clip_bytes("caller_interrupt") + b"\xff" * 6400):
                await conn.input_audio_buffer.append(audio=chunk)
            interrupted = await read.until("response.done")
            kinds = [e.type for e in interrupted if not e.type.endswith("delta")]
            i = kinds.index("input_audio_buffer.speech_started")
            assert kinds[i + 1 : i + 4] == [
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.content_part.done",
            ]
            cancelled = interrupted[-1].response
            assert cancelled.status == "cancelled"
            assert cancelled.status_details.reason == "turn_detected"
            received_ms = len(audio_of(read.seen, reply_item)) // 8
            assert 0 < received_ms < len(clip_bytes("agent_reply_long")) // 8

            # The interrupting turn is answered once the caller stops.
            answer = await read.until("response.done")
            assert answer[-1].response.status == "completed"
            assert audio_of(answer) == clip_bytes("agent_confirm")

            # Truncate what was "played" of the cancelled reply; past its end is an error.
            played = received_ms // 2
            await conn.conversation.item.truncate(
                item_id=reply_item, content_index=0, audio_end_ms=played
            )
            truncated = await read.next("conversation.item.truncated")
            assert (truncated.item_id, truncated.audio_end_ms) == (reply_item, played)
            await conn.conversation.item.truncate(
                item_id=reply_item, content_index=0, audio_end_ms=received_ms + 500
            )
            error = await read.next("error")
            assert "already shorter" in error.error.message

            # Cancelling with nothing active is a harmless error.
            await conn.response.cancel()
            error = await read.next("error")
            assert error.error.code == "response_cancel_not_active"

        await emu.wait_closed(session)
        assert [r.status for r in session.responses] == [
            "completed",
            "completed",
            "cancelled",
            "completed",
        ]
        assert [c.reason for c in session.cancellations] == ["turn_detected"]
        assert [(t.audio_end_ms, t.accepted) for t in session.truncations] == [
            (played, True),
            (received_ms + 500, False),
        ]
        assert session.truncations[0].audio_ms_generated == received_ms
        transcripts = [
            e["transcript"]
            for e in session.server_events("conversation.item.input_audio_transcription.completed")
        ]
        assert transcripts == [
            "What times do you have on Monday?",
            "Wait, can I ask something first?",
        ]
        assert session.violations == []
        assert session.warnings == []
        assert_valid_server_events(session.server_events())
        client_types = {e["type"] for e in session.client_events()}
        assert {"session.update", "input_audio_buffer.append", "conversation.item.truncate"} <= (
            client_types
        )
