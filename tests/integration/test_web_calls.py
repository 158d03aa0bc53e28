"""Web calls on the real stack: a Media Streams client that is not Twilio.

``POST /calls/web`` reserves a call actor without dialing; the client opens
the returned media URL through the edge with no Twilio signature: the one-time
token, offered as the subprotocol ``token.<token>`` and sent again in its
``start`` message, is the only credential. These tests
speak the protocol directly (the browser does the same in
tests/console/test_console_webcall.py).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from serve.schemas import WebCallOut

pytestmark = pytest.mark.integration

World = Any  # the `world` fixture of tests/conftest.py
CALL_TIMEOUT_S = 60
GREETING = "Hello! This is Ava calling from Bright Smiles Dental."
SILENCE = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of mu-law silence


class WebPhone:
    """A Media Streams client as the console's page is one: numbered messages, one stream."""

    def __init__(self, ticket: WebCallOut) -> None:
        self.ticket = ticket
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.sequence = 0
        self.ws: ClientConnection | None = None

    async def open(self, token: str) -> ClientConnection:
        self.ws = await websockets.connect(
            self.ticket.media_url,
            open_timeout=10,
            subprotocols=[Subprotocol(f"token.{token}")],  # as the browser offers it
        )
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        await self.ws.send(orjson.dumps(connected).decode())
        await self.send(
            "start",
            start={
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": self.ticket.call_sid,
                "tracks": ["inbound"],
                "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )
        return self.ws

    async def send(self, event: str, **body: object) -> None:
        assert self.ws is not None
        self.sequence += 1
        message = {"event": event, "sequenceNumber": str(self.sequence), **body}
        await self.ws.send(orjson.dumps(message | {"streamSid": self.stream_sid}).decode())

    async def silence(self, chunk: int) -> None:
        media = {"track": "inbound", "chunk": str(chunk), "timestamp": str(20 * (chunk - 1))}
        await self.send("media", media=media | {"payload": SILENCE})


async def status_event(world: World, call_id: str, status: str) -> None:
    async with world.client() as client:

        async def until() -> None:
            async for event in client.stream_events(call_id):
                if event["type"] == "call.status" and event.get("status") == status:
                    return

        await asyncio.wait_for(until(), CALL_TIMEOUT_S)


async def test_a_web_call_hears_the_greeting_and_ends_when_the_caller_stops(
    world: World,
) -> None:
    async with world.client() as client:
        ticket = await client.start_web_call("You are Ava.", voice="cedar")
    assert ticket.call.direction == "web"
    public = world.stack.public_url.replace("http", "ws", 1)
    assert ticket.media_url == f"{public}/media/{ticket.call.id}"
    phone = WebPhone(ticket)
    ws = await phone.open(ticket.stream_token)
    heard = chunk = 0
    async with asyncio.timeout(CALL_TIMEOUT_S):
        # Audio arrives as a phone's would: media frames, each followed by its mark.
        async for raw in ws:
            message = orjson.loads(raw)
            if message["event"] == "media":
                heard += len(base64.b64decode(message["media"]["payload"]))
                chunk += 1
                await phone.silence(chunk)  # the caller's side keeps flowing
            elif message["event"] == "mark":
                await phone.send("mark", mark=message["mark"])  # played
                if heard >= 8000:  # a second of the greeting
                    break
    await phone.send("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": ticket.call_sid})
    await ws.wait_closed()
    await status_event(world, ticket.call.id, "completed")
    async with world.client() as client:
        detail = await client.get_call(ticket.call.id)
    assert (detail.direction, detail.status, detail.twilio_sid) == ("web", "completed", None)
    assert detail.answered_at is not None and detail.ended_at is not None
    assert detail.transcript[0].role == "agent"
    assert GREETING.startswith(detail.transcript[0].heard_text or detail.transcript[0].text or "-")
    assert [e for e in detail.timeline if e.kind == "problem"] == []


async def test_a_web_socket_without_the_token_is_refused_and_the_call_waits_for_its_own(
    world: World,
) -> None:
    async with world.client() as client:
        ticket = await client.start_web_call("You are Ava.")
    # A stranger who knows the call id: refused at the handshake, so it can neither
    # hold the call's place nor end it.
    for token in ("not-" + ticket.stream_token, None):
        offered = [] if token is None else [Subprotocol(f"token.{token}")]
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(ticket.media_url, subprotocols=offered, open_timeout=10)
        assert refused.value.response.status_code == 403
    phone = WebPhone(ticket)
    ws = await phone.open(ticket.stream_token)
    assert ws.subprotocol == f"token.{ticket.stream_token}"
    async with asyncio.timeout(CALL_TIMEOUT_S):
        while orjson.loads(await ws.recv())["event"] != "media":
            pass  # the greeting reaches the right caller
    await ws.close()
    await status_event(world, ticket.call.id, "completed")
