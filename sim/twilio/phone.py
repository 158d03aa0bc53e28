"""The simulated phone: a Media Streams client for one ``<Connect><Stream>``.

A thin shell around the pure parts: ``StreamWriter`` (what to send),
``Playout`` (what the callee hears), ``CallerScript`` (what the callee
says). It reads frames from the app, and on every tick of the shared
``FrameClock`` it lets playout time pass and emits the media frames that are
due on its absolute 20 ms schedule. One writer task per socket sends, so the
clock never waits on a socket.

``run()`` returns ``"closed-by-app"`` when the app closes the socket (Twilio
then runs the TwiML after ``</Connect>``). Cancelling ``run()`` is how the
call ends the stream (hang-up, redirect): the phone sends ``stop`` as its last
message and closes the socket. A failed handshake raises ``StreamConnectError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .caller import CallerScript, FrameOut, Utterance
from .clock import FRAME_S, EmulatorStats, FrameClock
from .journal import Journal
from .media import (
    AudioReceived,
    ClearReceived,
    Ignored,
    MarkReceived,
    Rejected,
    StreamWriter,
    parse_server_message,
    stream_sid_problem,
)
from .playout import Cleared, MarkEchoed, Playout, PlayoutEvent
from .recording import ClearRecord, HeardTrack, MarkRecord, StreamRecord, WsMessage

__all__ = ["Phone", "StreamConnectError"]

log = logging.getLogger(__name__)
USER_AGENT = "Twilio.TmeWs/1.0"


class StreamConnectError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Phone:
    def __init__(
        self,
        *,
        url: str,
        signature: str,
        writer: StreamWriter,
        record: StreamRecord,
        script: CallerScript,
        heard: HeardTrack,
        clock: FrameClock,
        stats: EmulatorStats,
        journal: Journal,
        call_sid: str,
        answered_at: float,
        custom_parameters: dict[str, str],
        on_hangup: Callable[[], None],
        on_change: Callable[[], None],
        record_frames: bool = True,
        prelude: bytes = b"",
    ) -> None:
        self.url = url
        self.signature = signature
        self.writer = writer
        self.record = record
        self.script = script
        self.heard = heard
        self.clock = clock
        self.stats = stats
        self.journal = journal
        self.call_sid = call_sid
        self.answered_at = answered_at
        self.custom_parameters = custom_parameters
        self.record_frames = record_frames
        self.prelude = prelude  # audio the callee plays from the answer on (a voicemail)
        self._on_hangup = on_hangup
        self._on_change = on_change
        self.playout = Playout()
        self._out: asyncio.Queue[tuple[str | None, float | None]] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._t0 = 0.0  # loop time of "start": the stream clock's zero
        self._next_slot = 0.0
        self._stopping = False
        self._hung_up = False

    # -- clocks --------------------------------------------------------------------------

    def _stream_ms(self, now: float) -> float:
        return (now - self._t0) * 1000

    def _call_ms(self, now: float) -> float:
        return (now - self.answered_at) * 1000

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        try:
            ws = await connect(
                self.url,
                additional_headers={"X-Twilio-Signature": self.signature},
                user_agent_header=USER_AGENT,
                compression=None,
                max_size=None,
                open_timeout=10,
                ping_interval=None,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise StreamConnectError(31920, f"Stream - WebSocket - Handshake Error: {exc}") from exc
        self._ws = ws
        sender = loop.create_task(self._send_loop(ws), name=f"phone-writer-{self.call_sid}")
        try:
            self._begin(loop.time())
            await self._read_loop(ws)
            self._finish(loop.time(), "closed-by-app")
            return "closed-by-app"
        except asyncio.CancelledError:
            self._finish(loop.time(), "stopped", send_stop=True)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(sender), 2.0)
            raise
        finally:
            self.clock.remove(self)
            if not sender.done():
                self._out.put_nowait((None, None))
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(sender, 2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)

    def _begin(self, now: float) -> None:
        self._t0 = now
        self.record.started_ms = self._call_ms(now)
        self._enqueue(self.writer.connected())
        self._enqueue(self.writer.start(self.custom_parameters))
        self.clock.add(self, now)
        self._next_slot = self.clock.next_slot(now)
        # The prelude runs on the call clock: the first frame carries what plays at its slot.
        skip = round(self._call_ms(self._next_slot) * 8)
        if skip < len(self.prelude):
            self.script.inject(Utterance(self.prelude[skip:], label="prelude"), first=True)
        self._on_change()

    def _finish(self, now: float, reason: str, send_stop: bool = False) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.clock.remove(self)
        self._handle_playout(self.playout.close(self._stream_ms(now)), now)
        for mark in self.record.marks:
            if mark.played is None:
                mark.played = False
        if send_stop:
            self._enqueue(self.writer.stop())
        self._out.put_nowait((None, None))
        self.record.ended_ms = self._call_ms(now)
        self.record.end_reason = reason
        self._on_change()

    # -- test hooks ----------------------------------------------------------------------

    def hang_up(self) -> None:
        """The callee hangs up: the next tick reports it."""
        self.script.hang_up()

    # -- clock ---------------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        if self._stopping:
            return
        sent = False
        # Slot by slot, so the script decides each frame knowing only what had played by
        # then, and a mark reached after a slot is echoed after that slot's frame.
        while self._next_slot <= now + 1e-6 and not self._stopping:
            slot = self._next_slot
            self._next_slot += FRAME_S
            self._handle_playout(self.playout.advance(self._stream_ms(slot)), now)
            out = self.script.frame(self._stream_ms(slot))
            self._send_frame(out, slot, now)
            sent = True
            if out.hangup and not self._hung_up:
                self._hung_up = True
                self._on_hangup()
                return
        self._handle_playout(self.playout.advance(self._stream_ms(now)), now)
        if sent:
            self._on_change()  # frames went out: waiters on audio progress re-check

    def _send_frame(self, out: FrameOut, slot: float, now: float) -> None:
        record = self.record
        timestamp = round(self._stream_ms(slot))
        self._enqueue(self.writer.media(out.audio, timestamp), slot)
        record.frames_sent += 1
        if self.record_frames:
            record.sent_audio += out.audio
        for label in out.said:
            record.said.append((self._call_ms(slot), label))
        for digit in out.digits:
            record.dtmf_sent.append((self._call_ms(now), digit))
            self._enqueue(self.writer.dtmf(digit))
        if out.said or out.digits:
            self._on_change()

    # -- reading -------------------------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for message in ws:
                with self.stats.measure():
                    self._on_message(message, loop.time())

    def _on_message(self, message: str | bytes, now: float) -> None:
        parsed, _ = parse_server_message(message)
        call_ms = self._call_ms(now)
        is_media = isinstance(parsed, AudioReceived)
        if not is_media or self.record_frames:
            text = message if isinstance(message, str) else f'{{"binary":{len(message)}}}'
            self.record.messages.append(WsMessage(call_ms, "received", text))
        if problem := stream_sid_problem(parsed, self.writer.stream_sid):
            self.record.rejected.append((call_ms, *problem))
        # After a stall of this process (the clock a slot or more behind), what is read now
        # arrived while it was not running, when is unknown: it joins the buffer where the
        # clock stopped and the clock's catch-up plays it (clock.py). This errs early (a gap
        # in the app's audio during the stall is not heard), where reading at `now` made
        # silence of audio that was delivered in time.
        stalled = self._next_slot and now > self._next_slot + FRAME_S
        stream_ms = self._stream_ms(self._next_slot if stalled else now)
        match parsed:
            case AudioReceived(payload=payload):
                if self.record_frames:
                    self.record.received_audio += payload
                self._handle_playout(self.playout.push_audio(payload, stream_ms), now)
            case MarkReceived(name=name):
                self.record.marks.append(MarkRecord(name, call_ms))
                self._handle_playout(self.playout.push_mark(name, stream_ms), now)
            case ClearReceived():
                self._handle_playout(self.playout.clear(stream_ms), now)
            case Ignored(reason=reason):
                self.record.rejected.append((call_ms, "ignored", reason))
            case Rejected(reason=reason, message=text):
                self.record.rejected.append((call_ms, reason, text))
                self.journal.write(
                    "notification", call_sid=self.call_sid, reason=reason, message=text
                )
        if not is_media:
            self._on_change()

    def _handle_playout(self, events: list[PlayoutEvent], now: float) -> None:
        offset = self.record.started_ms or 0.0
        changed = False
        for event in events:
            self.heard.on_stream(event, offset)
            self.script.on_playout(event)
            match event:
                case MarkEchoed(name=name, at_ms=at, played=played):
                    for mark in self.record.marks:
                        if mark.name == name and mark.echoed_ms is None:
                            mark.echoed_ms, mark.played = at + offset, played
                            break
                    if not self._stopping:
                        self._enqueue(self.writer.mark(name))
                    changed = True
                case Cleared(at_ms=at, dropped_bytes=dropped, marks=marks):
                    self.record.clears.append(ClearRecord(at + offset, dropped, marks))
                    changed = True
        if changed:
            self._on_change()

    # -- writing -------------------------------------------------------------------------

    def _enqueue(self, text: str, slot: float | None = None) -> None:
        self._out.put_nowait((text, slot))

    async def _send_loop(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        record = self.record
        while True:
            text, slot = await self._out.get()
            if text is None:
                return
            try:
                with self.stats.measure():
                    await ws.send(text)
            except websockets.exceptions.ConnectionClosed:
                return
            now = loop.time()
            if slot is not None:
                self.stats.frame_sent(now - slot)
                if not self.record_frames:
                    self.journal.ws_sent(self.call_sid, text)
                    continue
            record.messages.append(WsMessage(self._call_ms(now), "sent", text))
            self.journal.ws_sent(self.call_sid, text)
