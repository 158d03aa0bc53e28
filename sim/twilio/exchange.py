"""The emulated phone network: every call, the CPS queue, and event-driven waits.

``create_call`` books the call's CPS slot (calls over the limit are queued,
never rejected: protocols.md 2.8) and starts its ``CallSession``.
``ring_in`` is a PSTN caller dialing one of the account's ``numbers``
(IncomingPhoneNumbers): an inbound call, run on the number's voice settings,
not limited by CPS, the simulated phone being the caller. Every
change anywhere (status, callback, stream message other than media) calls
``changed()``, which re-evaluates the predicates of ``wait_until`` waiters, so
tests wait on events rather than sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from sim.scenario import CallerTurn, NumberBehaviour

from .callbacks import Webhooks
from .caller import default_turns
from .calls import CallMachine, CallPlan
from .clock import EmulatorStats, FrameClock
from .config import EmulatorConfig
from .form import e164, valid_address
from .journal import Journal
from .numbers import InboundCallRefused, PhoneNumberRecord
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
        self.numbers: dict[str, PhoneNumberRecord] = {}  # by sid
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
        return scenario.behaviour_for(e164(number))

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
        return self._start(record, CallMachine(plan, dial_at), source, behaviour)

    def number_for(self, phone_number: str) -> PhoneNumberRecord | None:
        wanted = e164(phone_number)
        return next((n for n in self.numbers.values() if n.phone_number == wanted), None)

    def ring_in(self, to: str, from_: str) -> CallRecord:
        """``from_`` dials the account's number ``to``: an inbound call.

        The scenario's behaviour for ``from_`` (its ``hangup_after_s``) and its caller
        turns are the caller's; raises ``InboundCallRefused`` for a number the account
        does not have, one with no voice URL, or a caller that is no address."""
        if not valid_address(from_):
            raise InboundCallRefused(f"the caller {from_!r} is not an E.164 number")
        number = self.number_for(to)
        if number is None:
            raise InboundCallRefused(
                f"{to} is not one of account {self.config.account_sid}'s IncomingPhoneNumbers"
            )
        if not number.voice_url:
            raise InboundCallRefused(f"{number.phone_number} ({number.sid}) has no voice_url")
        now = asyncio.get_running_loop().time()
        behaviour = self.behaviour(from_)
        scenario = self.config.scenario
        plan = CallPlan(
            outcome="human",
            answer_after_s=0.0,
            hangup_after_s=behaviour.hangup_after_s,
            time_limit_s=float(DEFAULT_TIME_LIMIT_S),
            max_call_s=scenario.max_call_s if scenario is not None else 300.0,
            inbound=True,
        )
        created = utc_now()
        record = CallRecord(
            sid=new_sid("CA"),
            account_sid=self.config.account_sid,
            to=number.phone_number,
            from_=from_,
            params=number.call_params(),
            date_created=created,
            date_updated=created,
            direction="inbound",
            phone_number_sid=number.sid,
        )
        source = DocSource(url=number.voice_url, method=number.voice_method)
        return self._start(record, CallMachine(plan, now), source, behaviour)

    def _start(
        self,
        record: CallRecord,
        machine: CallMachine,
        source: DocSource,
        behaviour: NumberBehaviour,
    ) -> CallRecord:
        session = CallSession(
            self, record, machine, source, machine.plan.outcome, behaviour.answered_by
        )
        self.calls[record.sid] = record
        self.sessions[record.sid] = session
        loop = asyncio.get_running_loop()
        session.task = loop.create_task(session.run(), name=f"call-{record.sid}")
        self.journal.write(
            "call",
            call_sid=record.sid,
            status="queued",
            to=record.to,
            direction=record.direction,
            plan=str(machine.plan),
        )
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
