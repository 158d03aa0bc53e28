"""A minimal bridge, written the way Twilio's public sample bridges are, joins both emulators.

It shares no code with Switchboard's cores: if the emulators only worked with
our own bridge, this test would catch it. The bridge below follows
twilio-samples/speech-assistant-openai-realtime-api-python: forward audio
both ways, and on ``speech_started`` send ``clear`` and truncate the last
assistant item at (latest media timestamp - timestamp at its first delta).
"""

from __future__ import annotations

import asyncio
import json

import websockets
from openai import AsyncOpenAI
from twilio.rest import Client

from sim.scenario import parse_scenario
from sim.testing_realtime import run_realtime_emulator
from sim.testing_twilio import run_twilio_emulator

ACCOUNT, TOKEN = "AC" + "f" * 32, "reference-token"
SCENARIO = parse_scenario(
    {
        "caller": [
            {"say": "Hello? Who is this?", "clip": "caller_hello.ulaw", "after_agent_ms": 200},
            {"say": "Wait, sorry", "clip": "caller_interrupt.ulaw", "barge_in_ms": 1200},
            {"hangup": True, "after_agent_ms": 300},
        ],
        "assistant": [
            {"say": "Hello! This is Ava.", "clip": "agent_greeting.ulaw"},
            {"say": "We have openings on Monday.", "clip": "agent_reply_long.ulaw"},
            {"say": "Sure, I can help with that.", "clip": "agent_reply_short.ulaw"},
        ],
    }
)


async def reference_bridge(twilio_ws, openai_url: str) -> None:  # type: ignore[no-untyped-def]
    client = AsyncOpenAI(api_key="sk-ref", websocket_base_url=openai_url)
    async with client.realtime.connect(model="gpt-realtime") as openai_ws:
        await openai_ws.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a helpful assistant.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {"type": "server_vad"},
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                    },
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                },
            }
        )
        await openai_ws.response.create()
        state = {"sid": None, "ts": 0, "item": None, "first_ts": None}

        async def from_twilio() -> None:
            async for text in twilio_ws:
                msg = json.loads(text)
                if msg["event"] == "start":
                    state["sid"] = msg["start"]["streamSid"]
                elif msg["event"] == "media":
                    state["ts"] = int(msg["media"]["timestamp"])
                    await openai_ws.input_audio_buffer.append(audio=msg["media"]["payload"])
            await openai_ws.close()

        async def from_openai() -> None:
            async for event in openai_ws:
                if event.type == "response.output_audio.delta" and state["sid"]:
                    if state["item"] != event.item_id:
                        state["item"], state["first_ts"] = event.item_id, state["ts"]
                    media = {
                        "event": "media",
                        "streamSid": state["sid"],
                        "media": {"payload": event.delta},
                    }
                    await twilio_ws.send(json.dumps(media))
                elif event.type == "input_audio_buffer.speech_started" and state["item"]:
                    played = state["ts"] - state["first_ts"]
                    await twilio_ws.send(json.dumps({"event": "clear", "streamSid": state["sid"]}))
                    await openai_ws.conversation.item.truncate(
                        item_id=state["item"], content_index=0, audio_end_ms=played
                    )
                    state["item"] = None

        await asyncio.gather(from_twilio(), from_openai())


async def test_reference_bridge_carries_a_conversation_with_barge_in() -> None:
    async with (
        run_twilio_emulator(account_sid=ACCOUNT, auth_token=TOKEN, scenario=SCENARIO) as tw,
        run_realtime_emulator(scenario=SCENARIO, api_key="sk-ref") as rt,
    ):

        async def handler(ws):  # type: ignore[no-untyped-def]
            await reference_bridge(ws, rt.websocket_base_url)

        async with websockets.serve(handler, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            client = Client(ACCOUNT, TOKEN, environment={})
            client.api.base_url = tw.base_url
            twiml = f'<Response><Connect><Stream url="ws://127.0.0.1:{port}/media"/></Connect></Response>'
            call = await asyncio.to_thread(
                client.calls.create, to="+15551234567", from_="+15005550006", twiml=twiml
            )
            await tw.wait_for_call_status(call.sid, "completed", timeout=60)

        stream = tw.call(call.sid).streams[0]
        # Like Twilio's sample, the bridge clears on every speech start. The barge-in into
        # the long reply drops its unplayed audio; a pause in the caller's words that the
        # short default silence window took for a turn's end can also cut a reply that had
        # just begun (how often depends on timing, so only "at least once" is asserted).
        cutting = [clear for clear in stream.clears if clear.dropped_bytes > 0]
        assert cutting, stream.clears
        session = rt.sessions[0]
        cut = [t for t in session.truncations if t.accepted]
        assert cut, session.truncations
        for truncation in cut:
            assert truncation.audio_ms_generated is not None
            assert 0 < truncation.audio_end_ms <= truncation.audio_ms_generated
        assert len(session.server_events("response.done")) >= 3
        transcripts = [
            e["transcript"]
            for e in session.server_events("conversation.item.input_audio_transcription.completed")
        ]
        # The short default silence window may split "Hello? ... Who is this?" in two.
        assert transcripts[0] == "Hello? Who is this?"
        assert "Wait, sorry" in transcripts
