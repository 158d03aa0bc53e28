"""The emulator's clock: a stall of its own process must not become silence its phone
heard, and one phone's bug must not stop the others.

The emulator stands for Twilio, which runs elsewhere: while this process is not
running (descheduled, a garbage collection), the network still delivers the app's
audio. So after a stall the phones read what arrived before they catch up on the
missed frame slots. The app here sends from its own thread, so it keeps sending
while the test stalls the emulator's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest
from websockets.sync.server import ServerConnection, serve

from sim.scenario import CLIPS_DIR
from sim.testing_twilio import TwilioEmulator
from sim.twilio.clock import EmulatorStats, FrameClock
from sim.twilio.probe_app import stream_twiml
from tests.sim.twilio.test_twilio_media import dial

FRAME = 160  # 20 ms of mu-law
AUDIO = (CLIPS_DIR / "agent_reply_long.ulaw").read_bytes()[: 75 * FRAME]  # 1.5 s
LEAD_FRAMES = 25  # sent at once, as a model's faster-than-real-time audio arrives
STALL_S = 1.0  # twice the lead kept when it starts: without reading first, a gap
WAIT_S = 10.0  # a wait this long means the mark is not coming


class PacedApp:
    """A media stream app on its own thread: audio paced at real time, then a mark."""

    def __init__(self) -> None:
        self.playing = threading.Event()  # a third of the audio has been sent
        self.echoed = threading.Event()  # the closing mark came back: all of it played
        self.error: BaseException | None = None

    def handle(self, ws: ServerConnection) -> None:
        try:
            while (start := json.loads(ws.recv(timeout=WAIT_S)))["event"] != "start":
                pass
            stream_sid = start["streamSid"]
            frames = [AUDIO[i : i + FRAME] for i in range(0, len(AUDIO), FRAME)]
            first_due = time.monotonic()
            for n, frame in enumerate(frames):
                # Pacing the sender (the network peer), not synchronising the test.
                time.sleep(max(0.0, first_due + (n - LEAD_FRAMES) * 0.02 - time.monotonic()))
                payload = base64.b64encode(frame).decode()
                ws.send(
                    json.dumps(
                        {"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}
                    )
                )
                if n == len(frames) // 3:
                    self.playing.set()
            ws.send(
                json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": "done"}})
            )
            while json.loads(ws.recv(timeout=WAIT_S))["event"] != "mark":
                pass
            self.echoed.set()
        except BaseException as exc:  # reported by the test, not lost in this thread
            self.error = exc
            self.echoed.set()


@pytest.fixture
def paced_app() -> Iterator[tuple[PacedApp, str]]:
    app = PacedApp()
    with serve(app.handle, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield app, f"ws://127.0.0.1:{server.socket.getsockname()[1]}/media"
        server.shutdown()
        thread.join(WAIT_S)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()


@contextlib.asynccontextmanager
async def relay_to(url: str) -> AsyncIterator[str]:
    """A TCP relay in this process (as the media edge is in the suite's): after a stall its
    bytes reach the phone some loop passes later than the app's own would."""
    target = urlsplit(url)
    pipes: set[asyncio.Task[None]] = set()

    async def accept(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(target.hostname, target.port)
        for task in (pipe(down_r, up_w), pipe(up_r, down_w)):
            pipes.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}{target.path}"
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)


@pytest.mark.parametrize("relayed", [False, True], ids=["direct", "relayed"])
async def test_audio_that_arrived_during_a_stall_plays_without_a_gap(
    emu: TwilioEmulator, paced_app: tuple[PacedApp, str], relayed: bool
) -> None:
    app, url = paced_app
    async with contextlib.AsyncExitStack() as stack:
        if relayed:
            url = await stack.enter_async_context(relay_to(url))
        await stall_mid_reply(emu, app, url)


async def stall_mid_reply(emu: TwilioEmulator, app: PacedApp, url: str) -> None:
    sid = await dial(emu, stream_twiml(url))
    assert await asyncio.to_thread(app.playing.wait, WAIT_S)
    time.sleep(STALL_S)  # the stall under test: this process stops running for a while
    assert await asyncio.to_thread(app.echoed.wait, WAIT_S)
    assert app.error is None
    (item,) = emu.call(sid).heard.items  # one stretch: no silence in the middle
    assert item.ended_by == "mark:done"
    assert item.end_ms - item.start_ms == pytest.approx(len(AUDIO) / 8, abs=1)


async def test_a_phone_that_fails_on_a_tick_does_not_stop_the_others() -> None:
    clock = FrameClock(EmulatorStats())

    class Phone:
        def __init__(self, broken: bool) -> None:
            self.broken = broken
            self.ticks = 0
            self.enough = asyncio.Event()

        def on_tick(self, now: float) -> None:
            self.ticks += 1
            if self.broken:
                raise RuntimeError("a bug in one phone")
            if self.ticks >= 5:
                self.enough.set()

    broken, working = Phone(broken=True), Phone(broken=False)
    clock.add(broken)
    clock.add(working)
    try:
        await asyncio.wait_for(working.enough.wait(), WAIT_S)
        assert broken.ticks == 1  # taken off the clock after it failed
    finally:
        await clock.close()
