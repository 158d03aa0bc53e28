"""Run the OpenAI Realtime emulator inside the caller's event loop.

.. code-block:: python

    async with run_realtime_emulator() as emu:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=emu.websocket_base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            ...
        session = await emu.wait_for_session(0)
        await emu.wait_for_event(session, "response.done")

The server listens on an ephemeral loopback port (``port=0``) with uvicorn;
``emu`` is a ``RunningRealtimeEmulator``: the ``RealtimeEmulator`` (``sessions``,
``stats()``, ``wait_for*``) plus the URLs. Server frames are validated against
the SDK models by default here (``validate=True``); see ``SessionRecord.violations``.
"""

from __future__ import annotations

import base64
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pydantic
import uvicorn
from openai.types.realtime import RealtimeServerEvent

from sim.listener import tcp_listener
from sim.realtime.audio import CLIPS_DIR, ClipLibrary
from sim.realtime.options import EmulatorOptions
from sim.realtime.records import SessionRecord
from sim.realtime.responses import Pacing
from sim.realtime.script import Script
from sim.realtime.server import RealtimeEmulator, uvicorn_config
from sim.realtime.session import RealtimeSession
from sim.realtime.stats import EmulatorStats
from sim.scenario import Scenario, load_scenario

__all__ = [
    "PCMU_SESSION",
    "CoreDriver",
    "RunningRealtimeEmulator",
    "assert_valid_server_events",
    "clip_bytes",
    "event_types",
    "first_event",
    "run_realtime_emulator",
    "without_deltas",
]


class RunningRealtimeEmulator:
    def __init__(self, emulator: RealtimeEmulator, host: str, port: int) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}/v1"
        self.websocket_base_url = f"ws://{host}:{port}/v1"

    @property
    def sessions(self) -> list[SessionRecord]:
        return self.emulator.sessions

    def stats(self) -> EmulatorStats:
        return self.emulator.stats()

    def __getattr__(self, name: str) -> Any:
        # wait_for, wait_for_session, wait_for_event, wait_closed, options, ...
        return getattr(self.emulator, name)


@asynccontextmanager
async def run_realtime_emulator(
    scenario: Scenario | str | Path | None = None,
    port: int = 0,
    api_key: str | None = "sk-test",
    *,
    host: str = "127.0.0.1",
    connect_latency_ms: int = 0,
    first_audio_ms: int = 300,
    chunk_ms: int = 100,
    speed: float = 5.0,
    validate: bool = True,
    **options: Any,
) -> AsyncIterator[RunningRealtimeEmulator]:
    """Serve an emulator until the block exits; extra keywords go to ``EmulatorOptions``."""
    if isinstance(scenario, str | Path):
        scenario = load_scenario(scenario)
    emulator = RealtimeEmulator(
        EmulatorOptions(
            api_key=api_key,
            scenario=scenario,
            connect_latency_ms=connect_latency_ms,
            pacing=Pacing(first_audio_ms=first_audio_ms, chunk_ms=chunk_ms, speed=speed),
            validate=validate,
            **options,
        )
    )
    sock = tcp_listener(host, port)  # TCP_NODELAY on every connection it accepts
    config = uvicorn_config(emulator, host, sock.getsockname()[1])
    config.load()
    server = uvicorn.Server(config)
    # startup()/shutdown() rather than serve(): no signal handlers in a test loop.
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        yield RunningRealtimeEmulator(emulator, host, sock.getsockname()[1])
    finally:
        emulator.release_handshakes()  # a held one would hold up the shutdown for good
        await server.shutdown(sockets=[sock])


SERVER_EVENT = pydantic.TypeAdapter(RealtimeServerEvent)
WALL = 1_700_000_000.0
PCMU_SESSION = {
    "type": "realtime",
    "audio": {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}


def clip_bytes(name: str) -> bytes:
    """The bytes of a built-in clip (8 kHz mu-law), e.g. ``clip_bytes(\"caller_yes\")``."""
    return (CLIPS_DIR / f"{name}.ulaw").read_bytes()


def assert_valid_server_events(events: list[dict[str, Any]]) -> None:
    """Every event validates against the SDK's full server-event union."""
    for event in events:
        SERVER_EVENT.validate_python(event)


class CoreDriver:
    """Drives a ``RealtimeSession`` core with literal times; no sockets, no clock."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        pacing: Pacing | None = None,
        **kwargs: Any,
    ) -> None:
        clips = ClipLibrary()
        self.core = RealtimeSession(
            now=0.0,
            wall=WALL,
            script=Script(scenario, clips),
            clips=clips,
            rng=random.Random(7),
            pacing=pacing or Pacing(first_audio_ms=200, chunk_ms=100, speed=5.0),
            transcription_delay_ms=kwargs.pop("transcription_delay_ms", 50),
            **kwargs,
        )
        self.now = 0.0
        self.sent: list[dict[str, Any]] = []
        self.core.start()
        self._drain()

    def _drain(self) -> list[dict[str, Any]]:
        out = self.core.outgoing()
        assert_valid_server_events(out)
        self.sent.extend(out)
        return out

    def send(self, event: dict[str, Any] | str, dt: float = 0.0) -> list[dict[str, Any]]:
        self.now += dt
        text = event if isinstance(event, str) else orjson.dumps(event)
        self.core.receive(text, self.now)
        return self._drain()

    def advance(self, seconds: float) -> list[dict[str, Any]]:
        """Let ``seconds`` pass, firing every timer on time."""
        end = self.now + seconds
        out: list[dict[str, Any]] = []
        while (deadline := self.core.next_deadline) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.core.tick(self.now)
            out += self._drain()
        self.now = end
        return out

    def append(
        self, audio: bytes, chunk: int = 160, bytes_per_s: int = 8000
    ) -> list[dict[str, Any]]:
        """Append in chunks, advancing time as a live caller would."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(audio), chunk):
            out += self.advance(chunk / bytes_per_s)
            piece = base64.b64encode(audio[i : i + chunk]).decode()
            out += self.send({"type": "input_audio_buffer.append", "audio": piece})
        return out

    def pcmu(self, **audio_input: Any) -> list[dict[str, Any]]:
        session = orjson.loads(orjson.dumps(PCMU_SESSION))
        session["audio"]["input"].update(audio_input)
        return self.send({"type": "session.update", "session": session})


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def without_deltas(events: list[dict[str, Any]]) -> list[str]:
    return [t for t in event_types(events) if not t.endswith(".delta")]


def first_event(events: list[dict[str, Any]], type: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == type)
