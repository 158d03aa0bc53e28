"""One call from creation to its end: the shell around ``CallMachine``.

``run()`` sleeps until the machine's next deadline (or a poke from the REST
API or the phone), applies each transition (record, status callbacks,
waiters), and once answered: does AMD (not when ``SendDigits`` is set),
plays ``SendDigits``, then hands the TwiML to a ``TwimlExecutor``. The TwiML
runs in its own task so that the call can end under it at any moment (hang-up
by either side, ``TimeLimit``, ``update(twiml=/url=)``): cancelling that task
makes the phone send ``stop`` and close the socket.

An inbound call (``Exchange.ring_in``) is ringing when its number's voice URL
is fetched (``CallStatus=ringing``, ``Direction=inbound``); that document
answers the call and is then executed, or, starting with ``<Reject>``, ends
it unanswered (``busy``/``no-answer``).

Bad TwiML or a TwiML URL that cannot be fetched fails the call with Twilio's
error code (12100, 11200) and a notification; nothing a peer does may crash
the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any

from .amd import AmdResult, amd_result, load_greeting, machine_audio
from .callbacks import Lane, amd_params, status_params
from .caller import Utterance, dtmf_utterance
from .calls import TERMINAL, CallEvent, CallMachine, CallStatus, Transition
from .executor import DocSource, TwimlExecutor
from .recording import CallRecord, Notification
from .twiml import Document, Hangup, TwimlError
from .wire import utc_now

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["CallSession", "DocSource"]

log = logging.getLogger(__name__)


class CallSession:
    def __init__(
        self,
        exchange: Exchange,
        record: CallRecord,
        machine: CallMachine,
        source: DocSource,
        outcome: str,
        answered_by: str,
    ) -> None:
        self.exchange = exchange
        self.record = record
        self.machine = machine
        self.source = source
        self.outcome = outcome
        self.scripted_answered_by = answered_by
        self.status_callback = record.param("StatusCallback")
        self.status_callback_method = record.param("StatusCallbackMethod") or "POST"
        events = " ".join(record.params_all("StatusCallbackEvent")).split()
        self.status_events = set(events) or {"completed"}
        self.lane = Lane(ordered=exchange.config.ordered_callbacks)
        self.answered_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._redirect: DocSource | None = None
        self._sequence = 0
        self.amd: AmdResult | None = None
        self._background: list[asyncio.Task[None]] = []
        self._picked_up = False  # inbound: its voice URL has been fetched
        self._document: Document | None = None  # inbound: what that fetch answered
        greeting = machine_audio(answered_by, load_greeting()) if outcome == "voicemail" else b""
        self.executor = TwimlExecutor(self, greeting)

    # -- the REST API and test hooks -----------------------------------------------------

    def cancel(self, now: float) -> None:
        if self.machine.status in (CallStatus.QUEUED, CallStatus.RINGING):
            self._apply(self.machine.cancel(now))

    def hang_up(self, now: float, reason: str) -> None:
        machine = self.machine
        if machine.status is CallStatus.IN_PROGRESS:
            self._apply(machine.hang_up(now, reason))
        elif reason == "caller" and machine.plan.inbound and machine.status is CallStatus.RINGING:
            self._apply(machine.abandon(now))
        else:
            self.cancel(now)

    def redirect(self, source: DocSource) -> None:
        if self.machine.status is CallStatus.IN_PROGRESS:
            self._redirect = source
            self._poke.set()
        else:
            self.source = source

    def set_time_limit(self, seconds: float) -> None:
        self.machine.set_time_limit(seconds)
        self._poke.set()

    def set_status_callback(self, url: str | None, method: str | None) -> None:
        if url is not None:
            self.status_callback = url
        if method is not None:
            self.status_callback_method = method

    def inject(self, utterance: Utterance) -> bool:
        """Queue caller audio; it plays as soon as a stream runs."""
        if self.machine.ended:
            return False
        self.executor.inject(utterance)
        return True

    def send_dtmf(self, digits: str) -> bool:
        return self.inject(dtmf_utterance(digits, with_audio=self.exchange.config.dtmf_audio))

    def callee_hangs_up(self, now: float) -> None:
        if self.executor.phone is not None:
            self.executor.phone.hang_up()  # reported with the next frame, then stop
        else:
            self.hang_up(now, "caller")

    # -- transitions ---------------------------------------------------------------------

    def _apply(self, tr: Transition) -> None:
        rec, when = self.record, utc_now()
        rec.status = tr.after
        rec.date_updated = when
        rec.transitions.append(tr)
        match tr.event:
            case CallEvent.DIALED:
                rec.start_time = when
                self._status_callback("initiated", "initiated")
            case CallEvent.RANG:
                self._status_callback("ringing", "ringing")
            case CallEvent.ANSWERED:
                rec.answered_time = when
                self._status_callback("answered", "in-progress")
        if tr.after in TERMINAL:
            rec.end_time = when
            rec.end_reason = self.machine.end_reason
            answered = self.machine.answered_at
            if answered is not None:
                rec.duration = str(math.ceil(max(0.0, tr.at - answered)))
            else:
                rec.duration = "0"
            self._status_callback("completed", tr.after.value)
        self.exchange.journal.write(
            "call", call_sid=rec.sid, status=tr.after.value, event=tr.event.value, reason=tr.reason
        )
        self._poke.set()
        self.exchange.changed()

    def _status_callback(self, event: str, call_status: str) -> None:
        url = self.status_callback
        if not url or event not in self.status_events:
            return
        duration = int(self.record.duration) if self.record.duration else None
        params = status_params(self.record, event, call_status, self._sequence, utc_now(), duration)
        self._sequence += 1
        method = self.status_callback_method
        webhooks, rec = self.exchange.webhooks, self.record
        self.lane.submit(lambda: webhooks.request("status", rec, url, params, method))

    def notify(self, code: int, message: str, level: str = "error") -> None:
        self.record.notifications.append(Notification(self.call_ms(), code, message, level))
        self.exchange.journal.write(
            "notification", call_sid=self.record.sid, code=code, message=message, level=level
        )
        self.exchange.changed()

    def call_ms(self) -> float:
        if self.answered_at is None:
            return 0.0
        return (asyncio.get_running_loop().time() - self.answered_at) * 1000

    # -- the call ------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._answered_or_ended():
                self._poke.clear()
                for tr in self.machine.tick(loop.time()):
                    self._apply(tr)
                if self._answered_or_ended():
                    break
                if self.machine.status is CallStatus.RINGING and self._rings_in():
                    await self._pick_up()
                    continue
                await self._wait(self.machine.next_deadline)
            if self.machine.status is CallStatus.IN_PROGRESS:
                await self._in_progress()
        except Exception as exc:  # the emulator must survive its own bugs too
            log.exception("call %s crashed", self.record.sid)
            self.notify(0, f"emulator error: {type(exc).__name__}: {exc}")
            if self.machine.status is CallStatus.IN_PROGRESS:
                self._apply(self.machine.fail(loop.time(), "emulator-error"))
        finally:
            for task in self._background:
                await _cancel(task)
            await self.lane.drain()
            self.exchange.call_finished(self)

    def _answered_or_ended(self) -> bool:
        return self.machine.ended or self.machine.status is CallStatus.IN_PROGRESS

    def _rings_in(self) -> bool:
        return self.machine.plan.inbound and not self._picked_up

    async def _pick_up(self) -> None:
        """An inbound call: fetch the voice URL while ringing, then answer or reject."""
        self._picked_up = True
        loop, rec = asyncio.get_running_loop(), self.record
        # twilio-python's Call create(call_token=...) docstring: "A call_token is generated
        # when an incoming call is received on a Twilio number"; the app gets it here. Its
        # format is not documented: an opaque string.
        extra = {"CallToken": secrets.token_urlsafe(24)}
        try:
            document = await self.executor.load(self.source, extra)
        except TwimlError as error:
            if not self.machine.ended:
                self.notify(error.code, error.message)
                rec.error_code = error.code
                self._apply(self.machine.fail(loop.time(), f"twiml-error-{error.code}"))
            return
        if self.machine.ended:  # canceled or hung up while the app answered
            return
        opening = document[0] if document else None
        if isinstance(opening, Hangup) and opening.reject is not None:
            # "If the first verb in a TwiML document is <Reject>, Twilio will not pick up
            # the call. The call ends with a status of busy or no-answer" (TwiML <Reject>).
            self._apply(self.machine.reject(loop.time(), busy=opening.reject == "busy"))
            return
        self._document = document
        self._apply(self.machine.answer(loop.time()))

    async def _wait(self, deadline: float | None, task: asyncio.Task[None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        poke = loop.create_task(self._poke.wait())
        waiters: set[asyncio.Future[Any]] = {poke}
        if task is not None:
            waiters.add(task)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            poke.cancel()

    async def _sleep_while_up(self, until: float) -> bool:
        """Sleep until ``until`` unless the call ends first; True if still up."""
        loop = asyncio.get_running_loop()
        while not self.machine.ended and loop.time() < until:
            self._poke.clear()
            for tr in self.machine.tick(loop.time()):
                self._apply(tr)
            deadline = self.machine.next_deadline
            await self._wait(until if deadline is None else min(until, deadline))
        return not self.machine.ended

    async def _in_progress(self) -> None:
        loop = asyncio.get_running_loop()
        self.answered_at = self.machine.answered_at
        assert self.answered_at is not None
        rec = self.record
        mode, digits = rec.param("MachineDetection"), rec.param("SendDigits")
        # "If send_digits is provided, machine_detection is ignored" (create()'s docstring,
        # protocols.md 2.2): no AMD at all, so no AnsweredBy, no AMD callback, no delay.
        if mode in ("Enable", "DetectMessageEnd") and not digits:
            self.amd = amd_result(
                mode,
                self.outcome,
                self.scripted_answered_by,
                dict(rec.params),
                len(self.executor.machine_audio) // 8,
            )
            # Lenient like a boolean parser: "True" (sent by async_amd=True) also counts;
            # the raw string stays on the record for tests to catch.
            if (rec.async_amd_raw or "").lower() == "true":
                self._background.append(loop.create_task(self._async_amd(self.amd)))
            else:
                if not await self._sleep_while_up(self.answered_at + self.amd.duration_ms / 1000):
                    return
                rec.answered_by = self.amd.answered_by
                self.exchange.changed()
        if digits:
            tones = dtmf_utterance(digits).audio
            rec.heard.add_item(self.call_ms(), tones, "digits", "SendDigits")
            if not await self._sleep_while_up(loop.time() + len(tones) / 8000):
                return
        document, self._document = self._document, None
        execution = loop.create_task(self.executor.run(self.source, document))
        try:
            while True:
                self._poke.clear()
                for tr in self.machine.tick(loop.time()):
                    self._apply(tr)
                if self.machine.ended:
                    return
                if self._redirect is not None:
                    source, self._redirect = self._redirect, None
                    await _cancel(execution)
                    execution = loop.create_task(self.executor.run(source))
                    continue
                if execution.done():
                    error = execution.exception()
                    if isinstance(error, TwimlError):
                        self.notify(error.code, error.message)
                        rec.error_code = error.code
                        self._apply(self.machine.fail(loop.time(), f"twiml-error-{error.code}"))
                    elif error is not None:
                        raise error
                    else:
                        self._apply(self.machine.hang_up(loop.time(), "twiml-ended"))
                    return
                await self._wait(self.machine.next_deadline, execution)
        finally:
            await _cancel(execution)

    async def _async_amd(self, result: AmdResult) -> None:
        assert self.answered_at is not None
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self.answered_at + result.duration_ms / 1000 - loop.time()))
        if self.machine.ended:
            return
        rec = self.record
        rec.answered_by = result.answered_by
        url = rec.param("AsyncAmdStatusCallback")
        if url:
            params = amd_params(rec, result.answered_by, result.duration_ms)
            method = rec.param("AsyncAmdStatusCallbackMethod") or "POST"
            webhooks = self.exchange.webhooks
            self.lane.submit(lambda: webhooks.request("amd", rec, url, params, method))
        self.exchange.changed()

    # -- TwiML ---------------------------------------------------------------------------


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
