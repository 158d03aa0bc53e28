"""A web call: the browser's microphone speaks Media Streams to the real call bridge.

The ingress has no web-call endpoint yet, so this test adds the one the
console expects, on the test's app only (the contract is in the report):
``POST /calls/web`` answers ``{call, media_url, call_sid, stream_token}``
and ``/media/{id}`` is the call's Media Streams socket. Behind them run the
real ``CallShell`` and ``CallBridge`` (the Twilio and Realtime cores, the call
policy) against the Realtime emulator, exactly as a call actor runs them for a
phone call. Chromium's fake microphone plays a caller clip from a WAV file.

Checks: the page speaks the protocol the Twilio core accepts (`start` with
the one-time token and CallSid, 20 ms frames, mark echoes), the agent hears
the caller (the emulator's VAD fires on the browser's audio and the caller's
turn is transcribed), the browser plays the agent's replies (the marks come
back, so the policy leaves "speaking"; the agent's level meter moves), and
the caller hangs up from the page (`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import Header, HTTPException, WebSocket, WebSocketDisconnect
from openai import AsyncOpenAI

from actors.call_shell import CallShell
from actors.sockets import RealtimeSocket
from serve.schemas import CallOut
from sim.scenario import parse_scenario
from sim.testing_realtime import clip_bytes, run_realtime_emulator
from switchboard.bridge import CallBridge
from switchboard.call_actions import (
    Action,
    AgentTurnFinished,
    CallerTurnTranscribed,
    FinishCall,
    PhaseChanged,
)
from switchboard.call_policy import PolicyConfig
from switchboard.codec import mulaw_decode, mulaw_encode
from switchboard.errors import SocketClosed
from switchboard.session_config import SessionConfig
from switchboard.store import NewCall

Console = Any  # conftest.Console

GREETING = "Hello! This is Ava calling from Bright Smiles Dental."
REPLY = "Sure, I can help with that."
SCENARIO = parse_scenario(
    {
        "caller": [{"say": "Hello? Who is this?", "clip": "caller_hello.ulaw"}],
        "assistant": [
            {"say": GREETING, "clip": "agent_greeting.ulaw"},
            {"say": REPLY, "clip": "agent_reply_short.ulaw"},
        ],
        "max_call_s": 60,
    }
)
CALL_S = 45


def caller_wav(path: Path) -> Path:
    """The caller's side: quiet while the greeting plays, "Hello? Who is this?", then quiet."""
    hello = mulaw_decode(clip_bytes("caller_hello"))
    silence = np.zeros(8000 * 8, dtype=np.int16)  # the greeting (3.5 s) plays meanwhile
    samples = np.concatenate([silence, hello, np.zeros(8000 * 20, dtype=np.int16)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture(scope="module")
async def mic_browser(
    tmp_path_factory: pytest.TempPathFactory, browser_launcher: Any
) -> AsyncIterator[Any]:
    wav = caller_wav(tmp_path_factory.mktemp("mic") / "caller.wav")
    fake_mic = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with browser_launcher(fake_mic) as browser:
        yield browser


class StarletteSocket:
    """The shell's ``TextSocket`` over a Starlette WebSocket."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise SocketClosed(None, str(exc)) from exc

    async def recv(self) -> str | bytes:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise SocketClosed(message.get("code"), message.get("reason") or "")
        return message.get("text") or message.get("bytes") or b""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(RuntimeError):
            await self.ws.close(code, reason)


class Recorder:
    """The shell's hooks: store and publish every action in order, as the recorder does."""

    def __init__(self, console: Console, call_id: str) -> None:
        self.console, self.call_id = console, call_id
        self.actions: list[Action] = []
        self.queue: asyncio.Queue[tuple[Action, float]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._drain())

    async def run_tool(self, name: str, arguments: str) -> str:
        return '{"error": "no tools here"}'

    async def end_call(self, reason: str) -> None:
        pass  # the browser is the phone: the socket closing ends it

    def record(self, action: Action, now: float) -> None:
        self.actions.append(action)
        self.queue.put_nowait((action, time.time()))

    async def _drain(self) -> None:
        while True:
            action, at = await self.queue.get()
            await self.console.act(self.call_id, action, at=at)
            self.queue.task_done()


def add_web_calls(console: Console, app: Any, realtime: Any) -> dict[str, Any]:
    """The endpoint the console expects, on this test's app only."""
    calls: dict[str, Any] = {}

    @app.post("/calls/web", status_code=201)
    async def start_web_call(
        body: dict[str, Any], authorization: str = Header(default="")
    ) -> dict[str, Any]:
        if authorization != f"Bearer {console.token}":
            raise HTTPException(401, "invalid bearer token")
        call = await console.store.create_call(
            NewCall(
                direction="inbound",
                to="+15005550006",
                from_="web",
                instruction=body["instruction"],
                voice=body.get("voice"),
                greeting=body.get("greeting"),
                metadata={"channel": "web"} | body.get("metadata", {}),
            )
        )
        token, call_sid = secrets.token_urlsafe(16), "CA" + secrets.token_hex(16)
        bridge = CallBridge(
            PolicyConfig(
                session=SessionConfig(instructions=body["instruction"]),
                greeting=body.get("greeting"),
                stream_token=token,
            )
        )
        bridge.policy.expect_call_sid(call_sid)
        hooks = Recorder(console, call.id)
        shell = CallShell(bridge, hooks, call_id=call.id)
        client = AsyncOpenAI(api_key="sk-web", websocket_base_url=realtime.websocket_base_url)
        connection = await client.realtime.connect(model="gpt-realtime").enter()
        shell.start_realtime(RealtimeSocket(connection))
        calls[call.id] = {"shell": shell, "hooks": hooks, "connection": connection}
        await console.status(call.id, "in-progress")
        media_url = console.base_url.replace("http", "ws", 1) + f"/media/{call.id}"
        return {
            "call": CallOut.from_record(call).model_dump(mode="json", by_alias=True),
            "media_url": media_url,
            "call_sid": call_sid,
            "stream_token": token,
        }

    @app.websocket("/media/{call_id}")
    async def media(ws: WebSocket, call_id: str) -> None:
        entry = calls.get(call_id)
        if entry is None:
            await ws.close(1008, "unknown call")
            return
        await ws.accept()
        shell: CallShell = entry["shell"]
        shell.attach_twilio(StarletteSocket(ws))
        await shell.finished.wait()
        await shell.close()

    return calls


async def test_a_web_call_reaches_the_agent_and_plays_its_reply(
    mic_browser: Any, console_with: Any
) -> None:
    async with (
        run_realtime_emulator(scenario=SCENARIO, api_key="sk-web") as realtime,
        console_with(mic_browser) as console,
    ):
        await console.context.grant_permissions(["microphone"])
        calls = add_web_calls(console, console.app, realtime)
        page = await console.open()
        talk = page.get_by_role("button", name="Talk from this browser")
        await talk.wait_for()
        await page.fill("#call-instruction", "You are Ava from Bright Smiles Dental.")
        await talk.click()

        bar = page.locator("#webcall")
        await bar.locator(".webcall-state", has_text="Live").wait_for()
        (call_id,) = calls
        # The greeting plays in the page: the agent's level meter moves.
        await page.wait_for_function(
            """() => {
                const fill = document.querySelector('#webcall .speaker.agent .meter-fill');
                return fill && fill.style.transform && fill.style.transform !== 'scaleX(0)'
                    && fill.style.transform !== 'scaleX(0.00)';
            }"""
        )
        hooks: Recorder = calls[call_id]["hooks"]
        await page.locator(f'.call-card[data-call-id="{call_id}"]').wait_for()

        async def until(check: Any) -> None:
            async with asyncio.timeout(CALL_S):
                while not check():
                    await asyncio.sleep(0.05)

        # The agent hears the caller: their turn is transcribed, then answered.
        await until(lambda: any(isinstance(a, CallerTurnTranscribed) for a in hooks.actions))
        await until(
            lambda: any(
                isinstance(a, AgentTurnFinished) and a.transcript == REPLY for a in hooks.actions
            )
        )
        # The browser played both replies: their marks came back, so the policy
        # left "speaking" after each (it stays there until playback is confirmed).
        await until(
            lambda: (
                sum(isinstance(a, PhaseChanged) and a.old == "speaking" for a in hooks.actions) >= 2
            )
        )
        said = [
            (type(a).__name__, getattr(a, "transcript", getattr(a, "text", "")))
            for a in hooks.actions
            if isinstance(a, AgentTurnFinished | CallerTurnTranscribed)
        ]
        assert said == [
            ("AgentTurnFinished", GREETING),
            ("CallerTurnTranscribed", "Hello? Who is this?"),
            ("AgentTurnFinished", REPLY),
        ]
        # The bridge's Twilio core took every frame as a phone's: no protocol problems.
        problems = [a for a in hooks.actions if type(a).__name__ == "ProblemNoted"]
        assert problems == []

        # The call's live view shows the same conversation, from the same events.
        await bar.get_by_role("link", name="Open").click()
        await page.locator(".turn.agent .text", has_text=REPLY).wait_for()

        await bar.get_by_role("button", name="Hang up").click()
        await bar.locator(".webcall-state", has_text="Ended").wait_for()
        await until(lambda: any(isinstance(a, FinishCall) for a in hooks.actions))
        await hooks.queue.join()
        assert console.unexpected_errors() == []
        await calls[call_id]["connection"].close()


async def test_mu_law_tables_match_the_codec(console: Console) -> None:
    page = await console.open()
    encode, decode = await page.evaluate(
        """async () => {
            const { ENCODE, DECODE } = await import('/console/js/webcall/mulaw.js');
            return [Array.from(ENCODE), Array.from(DECODE)];
        }"""
    )
    assert bytes(encode) == mulaw_encode(np.arange(65536, dtype=np.uint16).view(np.int16))
    assert decode == mulaw_decode(bytes(range(256))).tolist()
