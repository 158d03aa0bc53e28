"""Both emulators on a thread of their own, with its own event loop.

The benchmark runs the whole stack in one process like the integration tests do,
except that the Twilio and Realtime emulators get their own thread: the media edge
(in the main thread's loop, where ``local_stack`` puts it) and the emulators then
show up as two threads in ``/proc/self/task``, so the edge's CPU can be told from
the emulators'. Both emulators share one loop, and every stamp they record is that
loop's ``time()``, which is ``time.monotonic()``: the same clock as the main
thread's loop and the CPU sampler.

Both emulators serve every connection with ``TCP_NODELAY`` (``sim/listener.py``):
with Nagle's algorithm on, a delta written while the previous one is unacknowledged
waits 1-20 ms for the actor's next packet or delayed ACK, which would be charged to
the relay.

.. code-block:: python

    with EmulatorThread(scenario, account_sid=SID, auth_token=TOKEN, api_key=KEY) as emus:
        emus.twilio.base_url, emus.realtime.base_url
        await emus.run(emus.twilio.wait_until(predicate, 60))
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from sim.scenario import Scenario
from sim.testing_realtime import RunningRealtimeEmulator, run_realtime_emulator
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator

__all__ = ["EmulatorThread"]

T = TypeVar("T")
START_TIMEOUT_S = 30.0


class EmulatorThread:
    def __init__(
        self, scenario: Scenario, *, account_sid: str, auth_token: str, api_key: str
    ) -> None:
        self._scenario = scenario
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_key = api_key
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="emulators", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._twilio: TwilioEmulator | None = None
        self._realtime: RunningRealtimeEmulator | None = None

    @property
    def twilio(self) -> TwilioEmulator:
        assert self._twilio is not None, "enter the EmulatorThread first"
        return self._twilio

    @property
    def realtime(self) -> RunningRealtimeEmulator:
        assert self._realtime is not None, "enter the EmulatorThread first"
        return self._realtime

    @property
    def native_id(self) -> int:
        assert self._thread.native_id is not None
        return self._thread.native_id

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise TimeoutError("the emulators did not start")
        if self._error is not None:
            raise RuntimeError("the emulators failed to start") from self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the emulators' loop and await its result from the caller's loop."""
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, which the main thread waits in
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            run_twilio_emulator(
                account_sid=self._account_sid,
                auth_token=self._auth_token,
                scenario=self._scenario,
            ) as twilio,
            # Frame validation is a test aid that costs CPU; the timings need the records.
            run_realtime_emulator(
                scenario=self._scenario, api_key=self._api_key, validate=False
            ) as realtime,
        ):
            self._twilio, self._realtime = twilio, realtime
            self._ready.set()
            await self._stop.wait()
