"""One emulator process carries 100 concurrent calls, frames paced by one shared clock.

The app side is a bare ``websockets`` server that checks every frame's
sequence/chunk/timestamp and plays a little agent audio with a mark. Jitter
and the emulator's CPU are printed, not asserted (the machine is shared).
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field

import pytest
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from websockets.asyncio.server import ServerConnection, serve

from sim.scenario import CLIPS_DIR, parse_scenario
from sim.testing_twilio import run_twilio_emulator

# twilio 9.13's async client still uses aiohttp's deprecated BasicAuth: not ours to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore:BasicAuth is deprecated:DeprecationWarning",
    "ignore:The 'auth' parameter is deprecated:DeprecationWarning",
)


CALLS = 100
FRAMES = 100  # per call: 2 s of audio each
AGENT = (CLIPS_DIR / "agent_reply_short.ulaw").read_bytes()[:4000]  # 500 ms


@dataclass
class Leg:
    frames: int = 0
    next_chunk: int = 1
    next_seq: int = 2
    stamps_ok: bool = True
    first_stamp: int | None = None
    marks: list[str] = field(default_factory=list)
    stopped: bool = False


async def test_hundred_concurrent_calls_keep_their_frames_in_order() -> None:
    legs: dict[str, Leg] = {}
    enough = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        leg = Leg()
        async for text in ws:
            message = json.loads(text)
            match message["event"]:
                case "start":
                    sid = message["start"]["callSid"]
                    legs[sid] = leg
                    payload = base64.b64encode(AGENT).decode()
                    stream_sid = message["streamSid"]
                    await ws.send(
                        json.dumps(
                            {
                                "event": "media",
                                "streamSid": stream_sid,
                                "media": {"payload": payload},
                            }
                        )
                    )
                    await ws.send(
                        json.dumps(
                            {"event": "mark", "streamSid": stream_sid, "mark": {"name": "greeting"}}
                        )
                    )
                case "media":
                    media = message["media"]
                    stamp = int(media["timestamp"])
                    if leg.first_stamp is None:
                        leg.first_stamp = stamp
                    expected = leg.first_stamp + 20 * (leg.next_chunk - 1)
                    leg.stamps_ok &= (
                        int(media["chunk"]) == leg.next_chunk
                        and int(message["sequenceNumber"]) >= leg.next_seq
                        and stamp == expected
                    )
                    leg.next_chunk += 1
                    leg.next_seq = int(message["sequenceNumber"]) + 1
                    leg.frames += 1
                    if len(legs) == CALLS and all(lg.frames >= FRAMES for lg in legs.values()):
                        enough.set()
                case "mark":
                    leg.marks.append(message["mark"]["name"])
                    leg.next_seq = int(message["sequenceNumber"]) + 1
                case "stop":
                    leg.stopped = True

    scenario = parse_scenario({"numbers": {"default": {"answer_after_s": 0.05}}})
    async with (
        serve(handler, "127.0.0.1", 0, compression=None) as server,
        run_twilio_emulator(
            account_sid="AC" + "5" * 32,
            auth_token="tok",
            scenario=scenario,
            default_caller=False,
            record_frames=False,
        ) as emu,
    ):
        port = server.sockets[0].getsockname()[1]
        twiml = (
            f'<Response><Connect><Stream url="ws://127.0.0.1:{port}/media"/></Connect></Response>'
        )
        http = AsyncTwilioHttpClient()
        client = Client(emu.config.account_sid, "tok", environment={}, http_client=http)
        client.api.base_url = emu.base_url
        try:
            calls = await asyncio.gather(
                *(
                    client.calls.create_async(to=f"+1555{i:07d}", from_="+15559870000", twiml=twiml)
                    for i in range(CALLS)
                )
            )
            await asyncio.wait_for(enough.wait(), 60)
            stats = emu.stats()
            await asyncio.gather(
                *(client.calls(c.sid).update_async(status="completed") for c in calls)
            )
        finally:
            await http.close()
        for call in calls:
            await emu.wait_for_stream_end(call.sid)

    print(
        f"\n{CALLS} calls: frame lateness ms {stats['frame_lateness_ms']}"
        f"\n  tick lateness ms {stats['tick_lateness_ms']}"
        f"\n  emulator cpu {stats['emulator_cpu_s']} s, process cpu {stats['process_cpu_s']} s,"
        f" wall {stats['wall_s']} s, frames {stats['frames_sent']}"
    )
    assert len(legs) == CALLS
    assert all(leg.stamps_ok for leg in legs.values())  # no frame lost, duplicated or reordered
    assert all(leg.frames >= FRAMES for leg in legs.values())
    assert all(leg.marks == ["greeting"] for leg in legs.values())
    assert all(leg.stopped for leg in legs.values())
    assert stats["frames_sent"] >= CALLS * FRAMES  # type: ignore[operator]
    assert stats["active_calls"] == CALLS
