"""One call, end to end, in one process: the keyless demo behind ``make run``.

Starts the two emulators (``sim/``), a media WebSocket server, and places a
call through the real ``twilio`` SDK; the call's Realtime session is opened
through the real ``openai`` SDK while the phone rings, exactly as the call
actor will do it. The transcript is printed as the conversation happens.
Ray and the Serve ingress take over this wiring in the live-calls issue; the
shell (``actors.call_shell``) and the cores are the same.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

import websockets
from openai import AsyncOpenAI
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse
from websockets.asyncio.server import ServerConnection

from actors.call_shell import CallShell, TextSocket
from actors.sockets import RealtimeSocket, WebsocketsSocket
from sim.scenario import load_scenario
from sim.testing_realtime import run_realtime_emulator
from sim.testing_twilio import run_twilio_emulator
from switchboard.bridge import CallBridge
from switchboard.call_actions import (
    Action,
    AgentTurnFinished,
    AgentTurnInterrupted,
    CallerTurnTranscribed,
    FinishCall,
    ProblemNoted,
)
from switchboard.call_policy import PolicyConfig
from switchboard.session_config import SessionConfig

__all__ = ["run_demo"]

DEMO_SCENARIO = Path(__file__).resolve().parent.parent / "sim" / "scenarios" / "demo.yaml"
ACCOUNT_SID = "AC" + "d" * 32
FROM_NUMBER = "+15005550006"


class TranscriptPrinter:
    """The demo's ``CallHooks``: print the conversation, hang up through the REST API."""

    def __init__(
        self,
        hang_up: Callable[[str], None],
        connect: Callable[[], Awaitable[TextSocket]],
        out: TextIO,
    ) -> None:
        self._hang_up = hang_up
        self._connect = connect
        self.out = out
        self.started = time.monotonic()

    async def run_tool(self, name: str, arguments: str) -> str:
        return '{"error": "the demo has no tools"}'

    async def end_call(self, reason: str) -> None:
        await asyncio.to_thread(self._hang_up, reason)

    async def open_realtime(self) -> TextSocket:
        return await self._connect()

    def record(self, action: Action, now: float) -> None:
        at = f"[{now - self.started:6.2f}s]"
        match action:
            case CallerTurnTranscribed(_, text):
                print(f"{at} caller: {text}", file=self.out)
            case AgentTurnFinished(_, transcript):
                print(f"{at} agent:  {transcript}", file=self.out)
            case AgentTurnInterrupted(_, heard_ms, generated_ms):
                print(
                    f"{at} agent:  (interrupted after {heard_ms} ms of {generated_ms} ms)",
                    file=self.out,
                )
            case ProblemNoted(source, reason, message, _):
                print(f"{at} note:   {source} {reason}: {message}", file=self.out)
            case FinishCall(reason):
                print(f"{at} call ended: {reason}", file=self.out)
            case _:
                pass


async def run_demo(
    to: str = "+15551234567",
    instruction: str = "You are Ava, booking a dental cleaning for Jane Doe.",
    out: TextIO = sys.stdout,
) -> str:
    """Place one demo call; returns the reason it ended."""
    auth_token = secrets.token_hex(16)
    scenario = load_scenario(DEMO_SCENARIO)
    async with (
        run_twilio_emulator(
            account_sid=ACCOUNT_SID, auth_token=auth_token, scenario=scenario
        ) as tw,
        run_realtime_emulator(scenario=scenario, api_key="sk-demo") as rt,
    ):
        client = Client(ACCOUNT_SID, auth_token, environment={})
        client.api.base_url = tw.base_url
        validator = RequestValidator(auth_token)
        shells: dict[str, CallShell] = {}

        async def media(ws: ServerConnection) -> None:
            host = ws.request.headers.get("Host", "") if ws.request else ""
            path = ws.request.path if ws.request else ""
            signature = ws.request.headers.get("X-Twilio-Signature", "") if ws.request else ""
            shell = shells.get(path.rsplit("/", 1)[-1])
            if shell is None or not validator.validate(f"ws://{host}{path}", {}, signature):
                await ws.close(1008, "signature or call not recognised")
                return
            shell.attach_twilio(WebsocketsSocket(ws))
            await shell.finished.wait()

        async with websockets.serve(media, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            call_id = secrets.token_hex(8)
            openai = AsyncOpenAI(api_key="sk-demo", websocket_base_url=rt.websocket_base_url)
            call_sid: list[str] = []

            async def open_session() -> TextSocket:
                return RealtimeSocket(await openai.realtime.connect(model="gpt-realtime").enter())

            def hang_up(reason: str) -> None:
                client.calls(call_sid[0]).update(status="completed")

            printer = TranscriptPrinter(hang_up, open_session, out)
            shell = CallShell(
                CallBridge(PolicyConfig(session=SessionConfig(instructions=instruction))),
                printer,
                call_id=call_id,
            )
            shells[call_id] = shell
            shell.start_realtime(await open_session())

            response = VoiceResponse()
            connect = Connect()
            connect.stream(url=f"ws://127.0.0.1:{port}/media/{call_id}")
            response.append(connect)
            call = await asyncio.to_thread(
                client.calls.create, to=to, from_=FROM_NUMBER, twiml=str(response)
            )
            call_sid.append(call.sid)
            print(f"calling {to} (call {call.sid}) ...", file=out)
            await asyncio.wait_for(shell.finished.wait(), timeout=scenario.max_call_s)
            await shell.close()
            return shell.finish_reason or "unknown"
