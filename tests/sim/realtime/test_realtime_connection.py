"""The WebSocket edge: auth, the beta shape, bad frames, routing, recording, logs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import websockets
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeSessionCreateRequest
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from sim.testing_realtime import RunningRealtimeEmulator, run_realtime_emulator

pytestmark = pytest.mark.integration


async def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return dict(orjson.loads(await ws.recv()))


async def recv_until(ws: Any, type: str) -> list[dict[str, Any]]:
    events = []
    while True:
        events.append(await recv_json(ws))
        if events[-1]["type"] == type:
            return events


def url(emu: RunningRealtimeEmulator, query: str = "?model=gpt-realtime") -> str:
    return f"{emu.websocket_base_url}/realtime{query}"


AUTH = {"Authorization": "Bearer sk-test"}


async def test_a_wrong_key_is_accepted_then_refused_in_band_as_the_service_does(
    emu: RunningRealtimeEmulator,
) -> None:
    # The upgrade succeeds; the one event is an error, then close 3000 (sim/realtime/auth.py).
    client = AsyncOpenAI(api_key="sk-not-the-key-9876", websocket_base_url=emu.websocket_base_url)
    received = []
    with pytest.raises(ConnectionClosedError) as closed:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            async for event in conn:
                received.append(event)
    assert [event.type for event in received] == ["error"]
    error = received[0].error  # type: ignore[union-attr]
    assert (error.type, error.code) == ("invalid_request_error", "invalid_api_key")
    assert error.message.startswith("Incorrect API key provided: sk-")
    assert "9876" in error.message
    assert "sk-not-the-key-9876" not in error.message
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        3000,
        "invalid_request_error.invalid_api_key",
    )
    record = await emu.wait_for_session(0)
    await emu.wait_closed(record)
    assert record.close_code == 3000
    assert [e["type"] for e in record.server_events()] == ["error"]
    assert "authorization" not in record.headers


async def test_a_missing_key_is_accepted_then_refused_in_band(
    emu: RunningRealtimeEmulator,
) -> None:
    async with websockets.connect(url(emu, "")) as ws:  # no model either: the key comes first
        event = await recv_json(ws)
        with pytest.raises(ConnectionClosedError) as closed:
            await recv_json(ws)
    assert event["type"] == "error"
    assert event["error"]["code"] is None
    assert event["error"]["message"] == "Missing bearer or basic authentication in header"
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3000, "invalid_request_error")


@pytest.mark.parametrize(
    ("query", "status"), [("", 400), ("?model=gpt-realtime&x=1", None), ("?call_id=rtc_1", None)]
)
async def test_model_or_call_id_is_required(
    emu: RunningRealtimeEmulator, query: str, status: int | None
) -> None:
    if status is None:
        async with websockets.connect(url(emu, query), additional_headers=AUTH) as ws:
            assert (await recv_json(ws))["type"] == "session.created"
        return
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url(emu, query), additional_headers=AUTH):
            pass
    assert refused.value.response.status_code == status


async def test_unknown_paths_are_404(emu: RunningRealtimeEmulator) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            f"{emu.websocket_base_url}/realtime/x", additional_headers=AUTH
        ):
            pass
    assert refused.value.response.status_code == 404


async def test_the_beta_client_gets_beta_api_shape_disabled_then_close_4000(
    emu: RunningRealtimeEmulator,
) -> None:
    client = AsyncOpenAI(api_key="sk-test", websocket_base_url=emu.websocket_base_url)
    async with client.beta.realtime.connect(model="gpt-realtime") as conn:
        error = json.loads(await conn.recv_bytes())
        assert error["type"] == "error"
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosedError) as closed:
            await conn.recv_bytes()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4000
    assert closed.value.rcvd.reason == "invalid_request_error.beta_api_shape_disabled"
    session = emu.sessions[0]
    await emu.wait_closed(session)
    assert session.close_code == 4000
    assert session.headers["openai-beta"] == "realtime=v1"


async def test_a_beta_shaped_session_update_closes_4000(emu: RunningRealtimeEmulator) -> None:
    async with websockets.connect(url(emu), additional_headers=AUTH) as ws:
        await recv_until(ws, "conversation.created")
        beta = {"modalities": ["audio"], "input_audio_format": "g711_ulaw"}
        await ws.send(json.dumps({"type": "session.update", "session": beta}))
        error = await recv_json(ws)
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosedError) as closed:
            await recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


async def test_bad_frames_get_errors_and_the_session_stays_open(
    emu: RunningRealtimeEmulator,
) -> None:
    async with websockets.connect(url(emu), additional_headers=AUTH) as ws:
        await recv_until(ws, "conversation.created")
        await ws.send("{this is not json")
        assert (await recv_json(ws))["error"]["code"] == "invalid_json"
        await ws.send(json.dumps({"event_id": "evt_9"}))
        error = (await recv_json(ws))["error"]
        assert (error["code"], error["message"], error["event_id"]) == (
            "invalid_event",
            "The 'type' field is missing.",
            "evt_9",
        )
        await ws.send(json.dumps({"type": "response.create"}))
        done = (await recv_until(ws, "response.done"))[-1]
        assert done["response"]["status"] == "completed"
    session = emu.sessions[0]
    await emu.wait_closed(session)
    assert [f.raw for f in session.frames if f.raw is not None] == ["{this is not json"]


async def test_the_sdk_sees_session_created_first_and_default_replies_rotate(
    emu: RunningRealtimeEmulator,
) -> None:
    client = AsyncOpenAI(api_key="sk-test", base_url=emu.base_url)  # ws URL derived from base_url
    async with client.realtime.connect(model="gpt-realtime") as conn:
        first = await conn.recv()
        assert first.type == "session.created"
        transcripts = []
        for _ in range(2):
            await conn.response.create()
            async for event in conn:
                if event.type == "response.output_audio_transcript.done":
                    transcripts.append(event.transcript)
                if event.type == "response.done":
                    break
    assert transcripts == [
        "Hello! This is Ava calling from Bright Smiles Dental.",
        "Sure, I can help with that.",
    ]
    assert emu.stats().deltas > 0


async def test_the_sdk_cannot_turn_a_realtime_session_into_transcription(
    emu: RunningRealtimeEmulator,
) -> None:
    client = AsyncOpenAI(api_key="sk-test", base_url=emu.base_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        assert (await conn.recv()).type == "conversation.created"
        await conn.session.update(session={"type": "transcription"}, event_id="evt_t")
        error = await conn.recv()
        assert error.type == "error"
        assert (error.error.code, error.error.param, error.error.event_id) == (
            "invalid_value",
            "session.type",
            "evt_t",
        )
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
        updated = await conn.recv()  # the session is still open, and still realtime
        assert updated.type == "session.updated"
        assert isinstance(updated.session, RealtimeSessionCreateRequest)
        assert updated.session.instructions == "Be brief."


async def test_sessions_are_independent(emu: RunningRealtimeEmulator) -> None:
    async with (
        websockets.connect(url(emu), additional_headers=AUTH) as a,
        websockets.connect(url(emu), additional_headers=AUTH) as b,
    ):
        ids = [(await recv_json(a))["session"]["id"], (await recv_json(b))["session"]["id"]]
        await a.send(json.dumps({"type": "response.create"}))
        await b.send(json.dumps({"type": "response.create"}))
        done_a = (await recv_until(a, "response.output_audio_transcript.done"))[-1]
        done_b = (await recv_until(b, "response.output_audio_transcript.done"))[-1]
    assert ids[0] != ids[1]
    assert done_a["transcript"] == done_b["transcript"]  # each session starts its own script


async def test_log_dir_gets_one_jsonl_file_per_session(tmp_path: Path) -> None:
    async with run_realtime_emulator(log_dir=tmp_path, record_frames=False) as emu:
        async with websockets.connect(url(emu), additional_headers=AUTH) as ws:
            await recv_json(ws)
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            await recv_until(ws, "input_audio_buffer.cleared")
        await emu.wait_closed(emu.sessions[0])
    (log,) = tmp_path.glob("*.jsonl")
    assert log.stem == emu.sessions[0].session_id
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["dir"], x["event"]["type"]) for x in lines] == [
        ("server", "session.created"),
        ("server", "conversation.created"),
        ("client", "input_audio_buffer.clear"),
        ("server", "input_audio_buffer.cleared"),
    ]


async def test_connect_latency_still_connects() -> None:
    async with run_realtime_emulator(connect_latency_ms=30) as emu:
        ws = await websockets.connect(url(emu), additional_headers=AUTH)
        assert (await recv_json(ws))["type"] == "session.created"
        await ws.close()


async def test_event_driven_waits(emu: RunningRealtimeEmulator) -> None:
    waiting = asyncio.ensure_future(emu.wait_for_session(0))
    # This client never reads, so let its queue grow rather than stall the close.
    async with websockets.connect(url(emu), additional_headers=AUTH, max_queue=None) as ws:
        session = await waiting
        await ws.send(json.dumps({"type": "response.create"}))
        done = await emu.wait_for_event(session, "response.done")
        assert done["response"]["status"] == "completed"
        deltas = await emu.wait_for_event(
            session, "response.output_audio.delta", lambda e: e["item_id"], count=2
        )
        assert deltas["type"] == "response.output_audio.delta"
    await emu.wait_closed(session)
    with pytest.raises(TimeoutError):
        await emu.wait_for(lambda: False, timeout=0.01)
