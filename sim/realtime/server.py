"""The emulator's ASGI app: the Realtime WebSocket plus the HTTP endpoints.

``RealtimeEmulator`` is an ASGI callable (served by uvicorn, see
``sim.testing_realtime`` and ``sim.realtime.cli``). WebSocket upgrades to
``/v1/realtime`` get a ``RealtimeSession`` driven by a ``Connection`` shell:
the reader feeds frames in, a timer (``loop.call_at``) fires at the core's
``next_deadline``, and one writer task drains the outgoing queue so neither
ever waits on the socket. Everything else goes to the Starlette app of
``sim.realtime.http_api``.

The WebSocket route is plain ASGI, not Starlette's ``WebSocket`` wrapper:
it is the hot path (about 50 inbound audio frames per second per session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

import orjson
import uvicorn

from sim.realtime.audio import ClipLibrary
from sim.realtime.auth import session_refusal
from sim.realtime.http_api import build_http_app
from sim.realtime.options import EmulatorOptions
from sim.realtime.records import FrameRecord, SessionRecord, Waiters
from sim.realtime.script import Script
from sim.realtime.session import RealtimeSession
from sim.realtime.stats import EmulatorStats, StatsCollector
from sim.realtime.validation import ClientError, ServerValidator

__all__ = ["Connection", "RealtimeEmulator", "uvicorn_config"]

WS_MAX_SIZE = 32 * 1024 * 1024  # one append may carry 15 MiB of audio, base64 in JSON

Scope = dict[str, Any]


class RealtimeEmulator:
    """State shared by all sessions, and the ASGI entry point."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.sessions: list[SessionRecord] = []
        self.waiters = Waiters()
        self.clips = ClipLibrary()
        self.collector = StatsCollector()
        self.validator = ServerValidator() if self.options.validate else None
        self._rng = random.Random(self.options.seed)
        self._http = build_http_app(self)
        self.open_connections: set[Connection] = set()
        self.held = 0  # handshakes waiting at a hold
        self._hold: asyncio.Event | None = None  # None: handshakes go through

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    # -- test helpers --------------------------------------------------------------

    def hold_handshakes(self) -> None:
        """Keep new sessions waiting at their handshake until ``release_handshakes``:
        a test's way to catch a call while its session opens, with no timing."""
        if self._hold is None:
            self._hold = asyncio.Event()

    def release_handshakes(self) -> None:
        if self._hold is not None:
            self._hold.set()
            self._hold = None

    async def wait_held(self, count: int, timeout: float | None = 10.0) -> None:
        """Until ``count`` handshakes wait at the hold."""
        await self.waiters.wait(lambda: self.held >= count, timeout)

    def stats(self) -> EmulatorStats:
        return self.collector.snapshot(len(self.sessions), len(self.open_connections))

    async def wait_for(self, predicate: Any, timeout: float | None = 10.0) -> Any:
        return await self.waiters.wait(predicate, timeout)

    async def wait_for_session(self, index: int = 0, timeout: float | None = 10.0) -> SessionRecord:
        def ready() -> SessionRecord | None:
            return self.sessions[index] if len(self.sessions) > index else None

        record: SessionRecord = await self.waiters.wait(ready, timeout)
        return record

    async def wait_for_event(
        self,
        session: SessionRecord,
        type: str,
        predicate: Any = None,
        *,
        count: int = 1,
        timeout: float | None = 10.0,
    ) -> dict[str, Any]:
        """The ``count``-th server event of ``type`` (and ``predicate``) sent to ``session``."""

        def found() -> dict[str, Any] | None:
            hits = [e for e in session.server_events(type) if predicate is None or predicate(e)]
            return hits[count - 1] if len(hits) >= count else None

        event: dict[str, Any] = await self.waiters.wait(found, timeout)
        return event

    async def wait_closed(self, session: SessionRecord, timeout: float | None = 10.0) -> None:
        await self.waiters.wait(lambda: session.closed, timeout)

    # -- the WebSocket route -------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Any, send: Any) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if scope["path"].rstrip("/") != "/v1/realtime":
            await _deny(send, 404, _error_body(f"Invalid URL (GET {scope['path']})", None))
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # A missing or wrong key is no HTTP 401: the upgrade goes through and the session
        # is refused in-band, as the service does (sim/realtime/auth.py says where from).
        refusal = session_refusal(headers.get("authorization"), self.options.api_key)
        query = parse_qs(scope.get("query_string", b"").decode())
        model = query.get("model", [None])[0]
        call_id = query.get("call_id", [None])[0]
        if refusal is None and model is None and call_id is None:
            body = _error_body("Missing required parameter: 'model'.", "missing_required_parameter")
            await _deny(send, 400, body, param="model")
            return
        if self.options.connect_latency_ms:
            await asyncio.sleep(self.options.connect_latency_ms / 1000)
        if (hold := self._hold) is not None:
            self.held += 1
            self.waiters.notify()
            try:
                await hold.wait()
            finally:
                self.held -= 1
        await send({"type": "websocket.accept"})
        connection = Connection(self, headers, model, call_id, send, refusal)
        self.open_connections.add(connection)
        try:
            await connection.run(receive)
        finally:
            self.open_connections.discard(connection)
            self.waiters.notify()


class Connection:
    """The I/O shell of one session: read, feed, flush, dispatch."""

    def __init__(
        self,
        emulator: RealtimeEmulator,
        headers: dict[str, str],
        model: str | None,
        call_id: str | None,
        send: Any,
        refusal: ClientError | None = None,
    ) -> None:
        self.emulator = emulator
        options = emulator.options
        self.loop = asyncio.get_running_loop()
        self.send = send
        self.collector = emulator.collector
        record_frames = options.record_frames or options.log_dir is not None
        self.core = RealtimeSession(
            now=self.loop.time(),
            wall=time.time(),
            script=Script(options.scenario, emulator.clips),
            clips=emulator.clips,
            model=model,
            call_id=call_id,
            pacing=options.pacing,
            rng=random.Random(emulator._rng.random()),
            max_session_s=options.max_session_s,
            transcription_delay_ms=options.transcription_delay_ms,
            record_frames=record_frames,
            on_delta=self.collector.delta,
        )
        self.record = self.core.record
        self.record.headers = {k: v for k, v in headers.items() if k != "authorization"}
        emulator.sessions.append(self.record)
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closing = False
        self._logged = 0
        self._log: IO[str] | None = None
        if options.log_dir is not None:
            Path(options.log_dir).mkdir(parents=True, exist_ok=True)
            path = Path(options.log_dir) / f"{self.record.session_id}.jsonl"
            self._log = path.open("w", encoding="utf-8")
        beta = headers.get("openai-beta", "")
        with self.collector.cpu():
            if refusal is not None:
                self.core.refuse(refusal)
            elif "realtime=v1" in beta.replace(" ", ""):
                self.core.reject_beta()
            else:
                self.core.start()
        self.flush()

    async def run(self, receive: Any) -> None:
        writer = asyncio.create_task(self._writer())
        try:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    self.record.close_code = message.get("code")
                    self.record.close_reason = message.get("reason")
                    break
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                self.collector.frames_in += 1
                with self.collector.cpu():
                    self.core.receive(data, self.loop.time())
                self.flush()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            writer.cancel()
            # The writer may already have failed on a peer that went away.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            self.record.closed_at = self.loop.time()
            if self._log is not None:
                self._write_log()
                self._log.close()

    def flush(self) -> None:
        validator = self.emulator.validator
        events = self.core.outgoing()
        for event in events:
            if validator is not None:
                with self.collector.validating():
                    problems = validator.check(event)
                self.record.violations.extend(problems)
            self._queue.append(orjson.dumps(event).decode())
        if events:
            self.collector.frames_out += len(events)
            self._wake.set()
        if self.core.close is not None and not self._closing:
            self._closing = True
            self._wake.set()
        self._arm_timer()
        if self._log is not None:
            self._write_log()
        self.emulator.waiters.notify()

    def _arm_timer(self) -> None:
        deadline = self.core.next_deadline
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        with self.collector.cpu():
            self.core.tick(self.loop.time())
        self.flush()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self.send({"type": "websocket.send", "text": self._queue.popleft()})
            if self._closing:
                code, reason = self.core.close or (1000, "")
                self.record.close_code, self.record.close_reason = code, reason
                await self.send({"type": "websocket.close", "code": code, "reason": reason})
                return

    def _write_log(self) -> None:
        assert self._log is not None
        frames = self.record.frames
        for frame in frames[self._logged :]:
            self._log.write(_log_line(frame) + "\n")
        self._logged = len(frames)


def _log_line(frame: FrameRecord) -> str:
    line: dict[str, object] = {"t": round(frame.t, 6), "dir": frame.direction, "event": frame.event}
    if frame.raw is not None:
        line["raw"] = frame.raw
    return orjson.dumps(line).decode()


def _error_body(message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


async def _deny(send: Any, status: int, body: dict[str, Any], param: str | None = None) -> None:
    if param is not None:
        body["error"]["param"] = param
    payload = orjson.dumps(body)
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": payload})


class _DenialNoise(logging.Filter):
    """uvicorn's sans-I/O websockets protocol sends an ASGI denial response
    (our HTTP 400/404) correctly but then logs it as an unfinished
    handshake; drop that one misleading line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def uvicorn_config(
    emulator: RealtimeEmulator, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """uvicorn settings for the emulator: sans-I/O websockets, no deflate, big frames."""
    config = uvicorn.Config(
        emulator,
        host=host,
        port=port,
        ws="websockets-sansio",
        ws_max_size=WS_MAX_SIZE,
        ws_per_message_deflate=False,
        lifespan="off",
        log_level=log_level,
        access_log=False,
    )
    error_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DenialNoise) for f in error_log.filters):
        error_log.addFilter(_DenialNoise())
    return config
