"""The emulated phone network: every call, the CPS queue, and event-driven waits.

``create_call`` books the call's CPS slot (calls over the limit are queued,
never rejected: protocols.md 2.8) and starts its ``CallSession``. Every
change anywhere (status, callback, stream message other than media) calls
``changed()``, which re-evaluates the predicates of ``wait_until`` waiters, so
tests wait on events rather than sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import phonenumbers

from sim.scenario import CallerTurn, NumberBehaviour

from .callbacks import Webhooks
from .caller import default_turns
from .calls import CallMachine, CallPlan
from .clock import EmulatorStats, FrameClock
from .config import EmulatorConfig
from .journal import Journal
from .recording import CallRecord, write_wav
from .session import CallSession, DocSource
from .wire import new_sid, utc_now

__all__ = ["Exchange"]

DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 600
DEFAULT_TIME_LIMIT_S = 14400


class Exchange:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.journal = Journal(config.log_dir, config.log_payloads)
        self.stats = EmulatorStats()
        self.clock = FrameClock(self.stats)
        self.webhooks = Webhooks(
            config.auth_token,
            self.journal,
            on_record=lambda _call: self.changed(),
            retries=config.callback_retries,
        )
        self.calls: dict[str, CallRecord] = {}
        self.sessions: dict[str, CallSession] = {}
        self._next_dial = 0.0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._clips: dict[Path, bytes] = {}
        self.requests = 0

    # -- scenario ------------------------------------------------------------------------

    def behaviour(self, number: str) -> NumberBehaviour:
        scenario = self.config.scenario
        if scenario is None:
            return NumberBehaviour()
        if number in scenario.numbers:
            return scenario.numbers[number]
        return scenario.behaviour_for(_e164(number))

    def caller_turns(self) -> Iterator[CallerTurn]:
        scenario = self.config.scenario
        if scenario is not None and scenario.caller:
            return iter(scenario.caller)
        return default_turns() if self.config.default_caller else iter(())

    def load_clip(self, path: Path) -> bytes:
        clip = self._clips.get(path)
        if clip is None:
            clip = self._clips[path] = path.read_bytes()
        return clip

    # -- calls ---------------------------------------------------------------------------

    def create_call(
        self,
        to: str,
        from_: str,
        params: tuple[tuple[str, str], ...],
        source: DocSource,
        timeout_s: int,
        time_limit_s: int,
    ) -> CallRecord:
        loop = asyncio.get_running_loop()
        now = loop.time()
        dial_at = self._cps_slot(now)
        behaviour = self.behaviour(to)
        scenario = self.config.scenario
        plan = CallPlan(
            outcome=behaviour.outcome,
            answer_after_s=behaviour.answer_after_s,
            hangup_after_s=behaviour.hangup_after_s,
            timeout_s=float(timeout_s),
            time_limit_s=float(time_limit_s),
            max_call_s=scenario.max_call_s if scenario is not None else 300.0,
        )
        created = utc_now()
        record = CallRecord(
            sid=new_sid("CA"),
            account_sid=self.config.account_sid,
            to=to,
            from_=from_,
            params=params,
            date_created=created,
            date_updated=created,
            queue_time_ms=round((dial_at - now) * 1000),
        )
        session = CallSession(
            self,
            record,
            CallMachine(plan, dial_at),
            source,
            behaviour.outcome,
            behaviour.answered_by,
        )
        self.calls[record.sid] = record
        self.sessions[record.sid] = session
        session.task = loop.create_task(session.run(), name=f"call-{record.sid}")
        self.journal.write("call", call_sid=record.sid, status="queued", to=to, plan=str(plan))
        self.changed()
        return record

    def _cps_slot(self, now: float) -> float:
        cps = self.config.cps
        if not cps:
            return now
        slot = max(now, self._next_dial)
        self._next_dial = slot + 1.0 / cps
        return slot

    def call_finished(self, session: CallSession) -> None:
        record = session.record
        if self.config.log_dir is not None:
            folder = Path(self.config.log_dir)
            with contextlib.suppress(OSError):
                if record.heard.mulaw():
                    record.heard.write_wav(folder / f"{record.sid}.heard.wav")
                for stream in record.streams:
                    if stream.sent_audio:
                        write_wav(
                            folder / f"{stream.stream_sid}.said.wav", bytes(stream.sent_audio)
                        )
        self.changed()

    @property
    def active_calls(self) -> int:
        return sum(1 for s in self.sessions.values() if s.task is not None and not s.task.done())

    # -- waiting -------------------------------------------------------------------------

    def changed(self) -> None:
        if not self._waiters:
            return
        still: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            try:
                if predicate():
                    future.set_result(None)
                    continue
            except Exception as exc:
                future.set_exception(exc)
                continue
            still.append((predicate, future))
        self._waiters = still

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Return once ``predicate()`` holds (checked now and after every change)."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            future.cancel()

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for session in self.sessions.values():
            if not session.machine.ended:
                session.hang_up(loop.time(), "emulator-shutdown")
        tasks = [s.task for s in self.sessions.values() if s.task is not None and not s.task.done()]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
        await self.clock.close()
        await self.webhooks.aclose()
        self.journal.close()


def _e164(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
