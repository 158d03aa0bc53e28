"""Both emulators in child processes of their own, one emulator each.

Real Twilio and OpenAI do not share the media edge's process, so neither the
benchmark, the integration suite's world nor ``make run``'s demo does: the Twilio
emulator and the Realtime emulator each run in a child process (``python -m
sim.processes``) with its own event loop and its own GIL. Neither emulator's work
(or a garbage collection) then delays the edge (in the main process, where
``local_stack`` puts it), the tests, or the other emulator, and their CPU is read
per process. In one process, a stall of the shared loop held back the Realtime
emulator's audio and the phone's clock alike, and the phone heard the silence (a
test's caller then spoke over the greeting).

Loop. uvloop (``DEFAULT_LOOP``; ``loop="asyncio"`` for the default loop): at 20
calls it took about 10% less emulator CPU (0.36 cores against 0.38-0.42; the
Realtime emulator 12-15% less) and the relay p99s were no worse. Its ``time()``
is changed, see ``MonotonicUvloop``.

Clock. Every stamp the emulators record is their loop's ``time()``, which is
``time.monotonic()`` under both loops: CLOCK_MONOTONIC, one clock for every
process of the machine, so records from both children and the parent's CPU samples
line up. uvloop's own ``time()`` reads CLOCK_MONOTONIC too, but truncated to whole
milliseconds (libuv's ``uv_now``): too coarse for relay latencies of 1-3 ms.

Protocol. Each child gets one end of a socket pair; over it (pickles, length-prefixed)
the parent sends the emulator's settings, the child answers ``("ready", base_url)``,
then serves requests (``REQUESTS``), each in a task of its own, so a long wait does
not hold up another: ``(id, name, args)`` in, ``(id, "ok" | "error", value)`` out.
They are waits that run inside the child (``wait_streaming``, ``wait_ended``,
``wait_for_call_status`` on the Twilio emulator), a PSTN caller dialing one of
the Twilio account's numbers (``ring_in``: an inbound call), reads of the records
(``records``: the records and ``stats()`` to hand to ``bench.live_summary.analyse``;
``sessions`` on the Realtime emulator), and the Realtime emulator's hold on new
sessions' handshakes (``holding_handshakes``, ``wait_held``: a test catches a call
while its session opens). Closing the socket stops the child. A child
also dies with the parent: ``PR_SET_PDEATHSIG`` and the socket's end of file, and it
ignores SIGINT (a Ctrl-C stops the parent, which stops it). A child never runs the
cyclic GC: it keeps every frame both ways, and a full collection over millions of
records would stall its loop for 0.1-0.5 s (so its memory grows with the calls it
carries, as the records do anyway: a demo of some hours, not a service of months).

Both emulators serve every connection with ``TCP_NODELAY`` (``sim/listener.py``).

.. code-block:: python

    async with EmulatorProcesses(scenario, account_sid=SID, auth_token=TOKEN, api_key=KEY) as emus:
        emus.twilio_url, emus.realtime_url, emus.pids
        await emus.wait_streaming(10, timeout=90)
        call = await emus.wait_for_call_status(sid, "completed", timeout=90)
        inbound = await emus.ring_in("+15551230004", "+15005550006")  # a number of the account
        records = await emus.records()
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import gc
import itertools
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVarTuple, cast

import uvloop

from sim.realtime.records import SessionRecord
from sim.realtime.stats import EmulatorStats
from sim.scenario import Scenario
from sim.testing_realtime import RunningRealtimeEmulator, run_realtime_emulator
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator
from sim.twilio.calls import TERMINAL
from sim.twilio.recording import CallRecord

__all__ = ["DEFAULT_LOOP", "EmulatorProcesses", "LoopName", "Records", "main"]

Kind = Literal["twilio", "realtime"]
LoopName = Literal["asyncio", "uvloop"]
DEFAULT_LOOP: LoopName = "uvloop"
Ts = TypeVarTuple("Ts")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0  # the Twilio emulator ends every live call on the way out
REPO = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Settings:
    """What a child needs to run its emulator (sent over the socket, not on argv)."""

    kind: Kind
    scenario: Scenario
    account_sid: str
    auth_token: str
    api_key: str
    validate: bool  # the Realtime emulator checks its frames against the SDK's models


@dataclass(frozen=True, slots=True)
class Records:
    """Both emulators' records at the end of a run, as ``analyse`` takes them."""

    calls: list[CallRecord]
    sessions: list[SessionRecord]
    twilio_stats: dict[str, object]
    realtime_stats: EmulatorStats


# -- framing: one pickle per message, its length first ------------------------------


def encode(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, "big") + data


async def send(writer: asyncio.StreamWriter, message: object) -> None:
    writer.write(encode(message))
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> Any:
    """The next message; ``asyncio.IncompleteReadError`` once the other end closed,
    ``ConnectionResetError`` if it died with a message of ours unread."""
    size = int.from_bytes(await reader.readexactly(8), "big")
    return pickle.loads(await reader.readexactly(size))


# -- the child: one emulator, serving the parent's requests ------------------------


async def wait_streaming(twilio: TwilioEmulator, count: int, timeout: float) -> bool:
    """Until ``count`` calls exist and each is streaming (or over); False on time-out."""

    def check() -> bool:
        calls = list(twilio.calls.values())
        return len(calls) >= count and all(
            c.status in TERMINAL or (c.stream is not None and c.stream.started_ms is not None)
            for c in calls
        )

    return await _wait(twilio, check, timeout)


async def wait_ended(twilio: TwilioEmulator, timeout: float) -> bool:
    """Until every call has ended; False on time-out."""
    return await _wait(
        twilio, lambda: all(c.status in TERMINAL for c in twilio.calls.values()), timeout
    )


async def _wait(twilio: TwilioEmulator, check: Callable[[], bool], timeout: float) -> bool:
    try:
        await twilio.wait_until(check, timeout)
    except TimeoutError:
        return False
    return True


async def twilio_records(twilio: TwilioEmulator) -> tuple[list[CallRecord], dict[str, object]]:
    return list(twilio.calls.values()), twilio.stats()


async def realtime_records(
    realtime: RunningRealtimeEmulator,
) -> tuple[list[SessionRecord], EmulatorStats]:
    return realtime.sessions, realtime.stats()


async def twilio_problems(twilio: TwilioEmulator) -> dict[str, list[str]]:
    """What each call's phone refused or ignored of the app's stream messages, by call sid."""
    problems: dict[str, list[str]] = {}
    for call in twilio.calls.values():
        for stream in call.streams:
            for _, reason, text in stream.rejected:
                problems.setdefault(call.sid, []).append(f"{reason}: {text}")
    return problems


async def realtime_problems(realtime: RunningRealtimeEmulator) -> dict[str, list[str]]:
    """Each session's protocol trouble, by session id: the errors the model answered the
    app's events with, and events of the emulator's own that broke the SDK's models."""
    problems: dict[str, list[str]] = {}
    for session in realtime.sessions:
        found = [f"error {e.get('code')}: {e.get('message')}" for e in session.errors()]
        found += [f"emulator sent an invalid event: {v}" for v in session.violations]
        if found:
            problems[session.session_id] = found
    return problems


async def wait_for_call_status(
    twilio: TwilioEmulator, sid: str, status: str, timeout: float
) -> CallRecord:
    return await twilio.wait_for_call_status(sid, status, timeout)


async def ring_in(twilio: TwilioEmulator, to: str, from_: str) -> str:
    return twilio.ring_in(to, from_)


async def sessions(realtime: RunningRealtimeEmulator) -> list[SessionRecord]:
    return realtime.sessions


async def hold_handshakes(realtime: RunningRealtimeEmulator) -> None:
    realtime.emulator.hold_handshakes()


async def release_handshakes(realtime: RunningRealtimeEmulator) -> None:
    realtime.emulator.release_handshakes()


async def wait_held(realtime: RunningRealtimeEmulator, count: int, timeout: float) -> None:
    await realtime.emulator.wait_held(count, timeout)


REQUESTS: dict[Kind, dict[str, Callable[..., Awaitable[object]]]] = {
    "twilio": {
        "wait_streaming": wait_streaming,
        "wait_ended": wait_ended,
        "wait_for_call_status": wait_for_call_status,
        "ring_in": ring_in,
        "records": twilio_records,
        "problems": twilio_problems,
    },
    "realtime": {
        "records": realtime_records,
        "problems": realtime_problems,
        "sessions": sessions,
        "hold_handshakes": hold_handshakes,
        "release_handshakes": release_handshakes,
        "wait_held": wait_held,
    },
}


@contextlib.asynccontextmanager
async def _emulator(settings: Settings) -> AsyncIterator[tuple[Any, str]]:
    """The emulator of ``settings.kind``, serving, and its base URL."""
    if settings.kind == "twilio":
        async with run_twilio_emulator(
            account_sid=settings.account_sid,
            auth_token=settings.auth_token,
            scenario=settings.scenario,
            ordered_callbacks=False,  # as Twilio sends them: what runs on these must cope
        ) as twilio:
            yield twilio, twilio.base_url
    else:
        async with run_realtime_emulator(
            scenario=settings.scenario, api_key=settings.api_key, validate=settings.validate
        ) as realtime:
            yield realtime, realtime.base_url


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    settings: Settings = await receive(reader)
    handlers = REQUESTS[settings.kind]
    sending = asyncio.Lock()
    running: set[asyncio.Task[None]] = set()

    async def answer(emulator: Any, rid: int, name: str, args: tuple[object, ...]) -> None:
        try:  # encoded here: a value that does not pickle is an error the parent sees too
            reply = encode((rid, "ok", await handlers[name](emulator, *args)))
        except Exception as exc:  # the parent raises it
            reply = encode((rid, "error", f"{type(exc).__name__}: {exc}"))
        async with sending:
            writer.write(reply)
            await writer.drain()

    async with _emulator(settings) as (emulator, base_url):
        gc.freeze()  # what start-up made is never scanned; nothing else is either
        gc.disable()
        await send(writer, ("ready", base_url))
        while True:
            try:
                rid, name, args = await receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):  # the parent closed or died
                break
            task = asyncio.create_task(answer(emulator, rid, name, args))
            running.add(task)
            task.add_done_callback(running.discard)
        for task in running:
            task.cancel()
    writer.close()


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the thread that started this process ends (the parent's main thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class MonotonicUvloop(uvloop.Loop):
    """uvloop whose ``time()`` is ``time.monotonic()``, not whole milliseconds.

    libuv runs a timer once its own clock (whole ms, floored) reaches the timer's
    start plus the delay rounded to ms: up to 1.5 ms before ``time.monotonic()``
    reaches the deadline. Code that sleeps until a deadline and then checks the time
    would find it not reached yet (the Twilio emulator's frame clock then sends a
    frame a whole 20 ms tick late, measured), so ``call_later`` (and ``call_at``,
    ``asyncio.sleep``, which go through it) aims at the first ms of libuv's clock at
    or after the deadline: never early, about 1 ms late at most, as the default
    loop's waits, which round up to whole ms.
    """

    def time(self) -> float:
        return time.monotonic()

    def call_later(
        self,
        delay: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        if delay > 0:
            libuv_now = super().time()  # read first: it cannot be ahead of the deadline's base
            delay = math.ceil((time.monotonic() + delay - libuv_now) * 1000) / 1000
        return super().call_later(delay, callback, *args, context=context)


LOOPS: dict[LoopName, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": MonotonicUvloop,
}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m sim.processes FD PARENT_PID LOOP``: serve one emulator over FD."""
    fd, parent, loop = argv if argv is not None else sys.argv[1:]
    _die_with_parent(int(parent))
    sock = socket.socket(fileno=int(fd))
    with asyncio.Runner(loop_factory=LOOPS[cast(LoopName, loop)]) as runner:
        runner.run(_serve(sock))


# -- the parent's side -------------------------------------------------------------


class EmulatorProcess:
    """One emulator's child process and the parent's end of its socket."""

    def __init__(self, settings: Settings, loop: LoopName) -> None:
        self.kind = settings.kind
        self._settings = settings
        self._loop = loop
        self._process: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._sending = asyncio.Lock()
        self._replies: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[tuple[str, object]]] = {}
        self._ids = itertools.count()
        self.base_url = ""

    @property
    def pid(self) -> int:
        assert self._process is not None, "start the EmulatorProcess first"
        return self._process.pid

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            # From this (the main) thread: PR_SET_PDEATHSIG fires when the thread that
            # started the child ends. stdout stays the parent's result channel.
            self._process = subprocess.Popen(
                [sys.executable, "-m", "sim.processes", str(theirs.fileno()),
                 str(os.getpid()), self._loop],
                pass_fds=[theirs.fileno()],
                cwd=REPO,
                stdout=sys.stderr,
            )  # fmt: skip
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        await send(self._writer, self._settings)
        try:
            status, self.base_url = await asyncio.wait_for(receive(self._reader), START_TIMEOUT_S)
        except (asyncio.IncompleteReadError, TimeoutError) as exc:
            raise RuntimeError(f"the {self.kind} emulator did not start") from exc
        assert status == "ready"

    async def request(self, name: str, *args: object) -> Any:
        assert self._reader is not None and self._writer is not None
        if self._replies is None:
            self._replies = asyncio.create_task(self._read_replies(self._reader))
        elif self._replies.done():
            raise RuntimeError(f"the {self.kind} emulator's process has ended")
        rid = next(self._ids)
        waiting = self._waiting[rid] = asyncio.get_running_loop().create_future()
        try:
            async with self._sending:
                await send(self._writer, (rid, name, args))
            status, value = await waiting
        finally:
            del self._waiting[rid]
        if status != "ok":
            raise RuntimeError(f"{self.kind} emulator, {name}: {value}")
        return value

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                rid, status, value = await receive(reader)
                if (waiting := self._waiting.get(rid)) is not None and not waiting.done():
                    waiting.set_result((status, value))
        except (asyncio.IncompleteReadError, ConnectionError):  # the child died: no answers
            for waiting in self._waiting.values():
                if not waiting.done():
                    waiting.set_result(("error", "the emulator's process ended"))

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()  # the child's end of file: it stops its emulator and exits
        if self._replies is not None:
            self._replies.cancel()
        if self._process is None:
            return
        try:
            await asyncio.to_thread(self._process.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            await asyncio.to_thread(self._process.wait)


class EmulatorProcesses:
    """The Twilio and the Realtime emulator, each in a child process (see the module)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        account_sid: str,
        auth_token: str,
        api_key: str,
        loop: LoopName = DEFAULT_LOOP,
        validate: bool = False,
    ) -> None:
        """``validate``: the Realtime emulator checks every frame it sends against the
        SDK's models (``SessionRecord.violations``), a test aid that costs CPU."""

        def settings(kind: Kind) -> Settings:
            return Settings(kind, scenario, account_sid, auth_token, api_key, validate)

        self.twilio = EmulatorProcess(settings("twilio"), loop)
        self.realtime = EmulatorProcess(settings("realtime"), loop)

    @property
    def twilio_url(self) -> str:
        return self.twilio.base_url

    @property
    def realtime_url(self) -> str:
        return self.realtime.base_url

    @property
    def pids(self) -> list[int]:
        return [self.twilio.pid, self.realtime.pid]

    async def __aenter__(self) -> EmulatorProcesses:
        try:
            await asyncio.gather(self.twilio.start(), self.realtime.start())
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        await asyncio.gather(self.twilio.stop(), self.realtime.stop())

    async def wait_streaming(self, count: int, timeout: float) -> bool:
        """True once ``count`` calls exist and each is streaming or over."""
        return bool(await self.twilio.request("wait_streaming", count, timeout))

    async def wait_ended(self, timeout: float) -> bool:
        """True once every call has ended."""
        return bool(await self.twilio.request("wait_ended", timeout))

    async def wait_for_call_status(self, sid: str, status: str, timeout: float) -> CallRecord:
        """The call's record once it has ``status``; raises if it ends in another."""
        record: CallRecord = await self.twilio.request("wait_for_call_status", sid, status, timeout)
        return record

    async def ring_in(self, to: str, from_: str) -> str:
        """A PSTN caller ``from_`` dials ``to``, a number created through the Twilio
        emulator's IncomingPhoneNumbers API: an inbound call on its voice URL; the
        CallSid. Raises ``RuntimeError`` naming ``InboundCallRefused`` for a number the
        account does not have (or that has no voice URL)."""
        sid: str = await self.twilio.request("ring_in", to, from_)
        return sid

    async def sessions(self) -> list[SessionRecord]:
        """Every Realtime session's record so far."""
        found: list[SessionRecord] = await self.realtime.request("sessions")
        return found

    @contextlib.asynccontextmanager
    async def holding_handshakes(self) -> AsyncIterator[None]:
        """New Realtime sessions wait at their handshake while inside (``wait_held``)."""
        await self.realtime.request("hold_handshakes")
        try:
            yield
        finally:
            await self.realtime.request("release_handshakes")

    async def wait_held(self, count: int, timeout: float) -> None:
        """Until ``count`` Realtime handshakes wait at the hold; raises on time-out."""
        await self.realtime.request("wait_held", count, timeout)

    async def problems(self) -> dict[str, list[str]]:
        """Every protocol problem either emulator saw so far, by call sid or session id."""
        twilio, realtime = await asyncio.gather(
            self.twilio.request("problems"), self.realtime.request("problems")
        )
        return {**twilio, **realtime}

    async def records(self) -> Records:
        (calls, twilio_stats), (sessions, realtime_stats) = await asyncio.gather(
            self.twilio.request("records"), self.realtime.request("records")
        )
        return Records(calls, sessions, twilio_stats, realtime_stats)


if __name__ == "__main__":
    main()
