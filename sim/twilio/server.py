"""The Twilio emulator assembled: REST app + exchange, served by uvicorn in the caller's loop.

``TwilioEmulator(config)``; ``await start()`` binds the socket first (so
``base_url`` is usable at once, even with port 0) and serves in a task;
``await stop()`` ends every live call (stop frames, final callbacks) and the
server. The methods below ``start``/``stop`` are the test API: records,
event-driven waits, a PSTN caller dialing one of the account's numbers
(``ring_in``), and injecting the simulated phone's audio, DTMF and hang-up
(the callee of an outbound call, the caller of an inbound one).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import uvicorn

from sim.listener import tcp_listener
from sim.scenario import CLIPS_DIR

from .caller import Utterance
from .calls import TERMINAL, CallStatus
from .config import EmulatorConfig
from .exchange import Exchange
from .recording import CallRecord, StreamRecord
from .rest import create_app

__all__ = ["TwilioEmulator"]


class _InProcessServer(uvicorn.Server):
    """A uvicorn server that leaves the host's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class TwilioEmulator:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.exchange = Exchange(config)
        self.app = create_app(self.exchange)
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        sock = tcp_listener(self.config.host, self.config.port)  # with TCP_NODELAY
        host, port = sock.getsockname()[:2]
        self.base_url = (
            f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"
        )
        return sock

    def _uvicorn_config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=2,
        )

    async def start(self) -> None:
        sock = self._bind()
        self._server = _InProcessServer(self._uvicorn_config())
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="twilio-emulator-http"
        )

    async def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM (the command-line entry point)."""
        sock = self._bind()
        self._server = uvicorn.Server(self._uvicorn_config())
        if on_ready is not None:
            on_ready(self.base_url)
        try:
            await self._server.serve(sockets=[sock])
        finally:
            await self.exchange.close()

    async def stop(self) -> None:
        await self.exchange.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- records -------------------------------------------------------------------------

    @property
    def calls(self) -> Mapping[str, CallRecord]:
        return self.exchange.calls

    def call(self, sid: str) -> CallRecord:
        return self.exchange.calls[sid]

    def stats(self) -> dict[str, object]:
        """Frame lateness and tick lateness percentiles (ms), emulator and process CPU (s)."""
        return {**self.exchange.stats.snapshot(), "active_calls": self.exchange.active_calls}

    def reset_stats(self) -> None:
        """Start a new measurement window for ``stats()`` (after a warm-up)."""
        self.exchange.stats.reset()

    @property
    def journal_path(self) -> Path | None:
        return self.exchange.journal.path

    # -- waits ---------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        await self.exchange.wait_until(predicate, timeout)

    async def wait_for_calls(self, count: int, timeout: float = 10.0) -> list[CallRecord]:
        await self.wait_until(lambda: len(self.calls) >= count, timeout)
        return list(self.calls.values())

    async def wait_for_call_status(
        self, sid: str, status: str | CallStatus, timeout: float = 10.0
    ) -> CallRecord:
        """Wait for ``status``; fail at once if the call ends in another status."""
        wanted = CallStatus(status)
        call = self.call(sid)

        def reached() -> bool:
            return call.status is wanted or call.status in TERMINAL

        try:
            await self.wait_until(reached, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"call {sid} is {call.status}, not {wanted}, after {timeout}s"
            ) from None
        if call.status is not wanted:
            raise AssertionError(
                f"call {sid} ended {call.status} ({call.end_reason}), not {wanted}"
            )
        return call

    async def wait_for_stream(self, sid: str, timeout: float = 10.0) -> StreamRecord:
        """The call's latest stream, once its ``start`` message has been sent."""
        call = self.call(sid)

        def started() -> bool:
            if call.status in TERMINAL:
                return True
            return bool(call.streams) and (
                call.streams[-1].started_ms is not None or call.streams[-1].end_reason != ""
            )

        await self.wait_until(started, timeout)
        if not call.streams:
            raise AssertionError(f"call {sid} ended {call.status} without a stream")
        return call.streams[-1]

    async def wait_for_stream_end(self, sid: str, timeout: float = 10.0) -> StreamRecord:
        call = self.call(sid)
        await self.wait_until(
            lambda: bool(call.streams) and call.streams[-1].end_reason != "", timeout
        )
        return call.streams[-1]

    # -- the caller ----------------------------------------------------------------------

    def ring_in(self, to: str, from_: str) -> str:
        """``from_`` dials ``to``, an IncomingPhoneNumber of the account: an inbound call
        on the number's voice URL; its CallSid. The simulated phone is the caller: the
        scenario's caller turns, and its behaviour for ``from_`` (``hangup_after_s``).
        Raises ``InboundCallRefused`` if no number of the account is ``to`` or it has no
        voice URL."""
        return self.exchange.ring_in(to, from_).sid

    # -- the callee ----------------------------------------------------------------------

    def inject_audio(self, sid: str, mulaw: bytes, label: str = "injected") -> bool:
        """The callee says ``mulaw`` (8 kHz mu-law) after whatever it is saying now."""
        return self.exchange.sessions[sid].inject(Utterance(bytes(mulaw), label=label))

    def say_clip(self, sid: str, clip: str | Path) -> bool:
        path = Path(clip)
        if not path.is_file():
            path = CLIPS_DIR / (clip if str(clip).endswith(".ulaw") else f"{clip}.ulaw")
        return self.inject_audio(sid, self.exchange.load_clip(path), label=path.stem)

    def send_dtmf(self, sid: str, digits: str) -> bool:
        return self.exchange.sessions[sid].send_dtmf(digits)

    def hang_up(self, sid: str) -> None:
        """The callee hangs up (the stream gets ``stop``, the call ends ``completed``)."""
        self.exchange.sessions[sid].callee_hangs_up(asyncio.get_running_loop().time())
