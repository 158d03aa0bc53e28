"""One live call: its Twilio media socket, its Realtime socket and its codec state.

An ordinary class; ``actors/ray_wiring.py`` makes it a Ray actor (one per
call, detached, named by its pool slot, asking for a ``call_slot`` resource
and memory). It owns a small WebSocket server of its own (picows: about half
the CPU per message of ``websockets``), so the call's Twilio stream ends here
with no Ray call per frame: the media edge splices the upgrade to
``media_address`` untouched, and the handshake's ``X-Twilio-Signature`` is
checked here, against the public URL, before any audio flows. The Realtime
session is opened in ``prepare``, while the phone rings, so the greeting can
start the moment the callee answers; it is opened the way the openai SDK
opens it (``actors/realtime_connect.py``) without importing the SDK, which
would cost every call actor ~29 MB.

A web call (``CallPlan.web``) is the same call with a browser as the phone:
its socket carries no Twilio signature: the browser offers the one-time token as
the subprotocol ``token.<token>`` (checked before the socket is the call's) and
again in ``start``. It ends by closing that socket rather than through
Twilio's REST API. No Twilio status callback reports a web call, nor an inbound
one (Twilio sends those to the number's own callback URL), so for both the
actor records the status itself: ``in-progress`` on connect, then
``completed``, ``no-answer`` (a browser that never connected), ``canceled``
(hung up through the API before it connected) or ``failed``.

Every call ends even when a word about it is lost: a call whose stream has not
come ``STREAM_WAIT_S`` after the last word from Twilio is hung up as failed (a
web call after ``WEB_CONNECT_TIMEOUT_S``, as no-answer), and an actor handed
out whose call is never prepared (the ingress died, or opening the session
failed) gives up after ``PREPARE_WAIT_S`` and is retired.

What the call says and does is batched to a ``Reporter`` (the recorder: store
and live events) every ``REPORT_INTERVAL_S``, and at once when the call ends.
While the recorder fails (restarting, its database away) the actions wait, and
reports are tried with a back-off up to ``REPORT_RETRY_MAX_S``, at most
``REPORT_CHUNK`` actions each; the backlog drops what only live viewers want,
merges transcript deltas, and is bounded by ``MAX_BACKLOG`` (a ``backlog_full``
problem says that something was dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Protocol
from urllib.parse import urlparse

from twilio.request_validator import RequestValidator

from actors.call_shell import CallShell
from actors.picows_sockets import MediaServer, PicowsSocket, serve_media
from actors.realtime_connect import SessionSocket, connect_realtime, realtime_url
from switchboard.bridge import CallBridge
from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    CallEnded,
    CallStatusChanged,
    FinishCall,
    HangUp,
    HangupRequested,
    LevelsMeasured,
    PhaseChanged,
    ProblemNoted,
)
from switchboard.call_policy import CallPhase, PolicyConfig
from switchboard.errors import CallCanceled, ConfigError, LocalProtocolError
from switchboard.session_config import SessionConfig
from switchboard.settings import Settings

__all__ = ["CallActor", "CallPlan", "HangUpVia", "Reporter", "StatusVia"]

log = logging.getLogger(__name__)
REPORT_INTERVAL_S = 0.5  # a Ray call costs ~1.2 ms of CPU: 2 a second per call, not 5
WEB_TOKEN_PROTOCOL = "token."  # a web call's socket offers subprotocol token.<stream token>
LAST_REPORT_WAIT_S = 120.0  # a recorder restarts in seconds; a database may take longer
WEB_CONNECT_TIMEOUT_S = 30.0  # a web call whose browser never connects ends as no-answer
# Dialed (or last heard of from Twilio) with no stream yet: Twilio rings for 60 s unless
# told otherwise, and a status callback restarts the wait (a queued call rings late).
STREAM_WAIT_S = 120.0
ANSWER_GRACE_S = 15.0  # Twilio says answered but no stream yet: one wait this long
STREAM_GIVE_UP_S = 900.0  # however Twilio queues or rings it, no longer than this
PREPARE_WAIT_S = 60.0  # handed out, never prepared: the ingress that acquired it is gone
REPORT_TIMEOUT_S = 20.0  # one report; a recorder whose database hangs must not hold a call
REPORT_RETRY_MAX_S = 4.0  # the longest pause between reports to a recorder that fails
REPORT_CHUNK = 500  # actions a report carries at most: a backlog goes in several
# Actions kept while the recorder is away (minutes of speech, with transcript deltas
# merged): past it, only what ends the call's record is kept.
MAX_BACKLOG = 5000
# For live viewers only: the store keeps every other action a call reports
# (switchboard/store/recorder.py), and these are stale once the recorder is back.
LIVE_ONLY = frozenset({LevelsMeasured})
# Placing a call hung up before Twilio's create answered: the wrap-up waits this long for
# the CallSid, to end the call Twilio is about to ring (the create's timeout and retries).
DIAL_WAIT_S = 90.0
# Every final status: "completed" too, for a call answered whose stream never came (a
# refused handshake, the callee gone first): nothing else would end it.
FINAL_STATUSES = frozenset({"busy", "no-answer", "failed", "canceled", "completed"})


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Everything a call actor needs to know about its call."""

    call_id: str
    instruction: str
    stream_token: str
    voice: str = "marin"
    greeting: str | None = None
    max_duration_s: float = 1800.0
    caller_silence_s: float = 30.0
    web: bool = False  # the phone is a browser: no Twilio signature, no REST hang-up
    inbound: bool = False  # Twilio called us: no status callback reports the call

    @property
    def reports_own_status(self) -> bool:
        return self.web or self.inbound


class Reporter(Protocol):
    async def report(
        self,
        call_id: str,
        batch: list[tuple[Action, float]],
        seq: int | None = None,
        sender: str = "",
    ) -> None:
        """Store and publish ``(action, unix time)`` pairs, in order. ``seq`` is how many
        of ``sender``'s actions for the call earlier reports delivered (0 for its first):
        a batch sent again after a failure the recorder did not see (its answer lost as
        it restarted) is recorded once. A recorder restarted since the first report takes
        the call over rather than counting it as started again."""


def _ends_record(action: Action) -> bool:
    """Kept past MAX_BACKLOG: how the call ended (a handful a call)."""
    if type(action) is ProblemNoted:
        return action.fatal
    return type(action) in (FinishCall, HangUp, CallStatusChanged)


# The handshake headers the checks read (the signed URL, the signature, a web call's token).
CHECKED_HEADERS = (
    "Host",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Twilio-Signature",
    "Sec-WebSocket-Protocol",
)
HangUpVia = Callable[[str], Awaitable[None]]  # Twilio REST: end the call with this CallSid
StatusVia = Callable[[str], Awaitable[str | None]]  # Twilio REST: that call's status now
STILL_COMING = frozenset({"queued", "initiated", "ringing"})  # Twilio statuses worth waiting on


class CallActor:
    def __init__(
        self,
        slot: str,
        settings: Settings,
        reporter: Reporter,
        end_via_rest: HangUpVia,
        *,
        status_via_rest: StatusVia | None = None,
    ) -> None:
        self.slot = slot
        self.settings = settings
        self.reporter = reporter
        self._rest_hang_up = end_via_rest
        self._rest_status = status_via_rest
        self.calls_served = 0
        self._host = "127.0.0.1"
        self._server: MediaServer | None = None
        self._pending: list[tuple[Action, float]] = []
        self._reporting = asyncio.Lock()  # one batch in flight: batches arrive in order
        if settings.twilio_auth_token is None:
            raise ConfigError("TWILIO_AUTH_TOKEN is needed to check media stream signatures")
        self._validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
        self._forget_call()

    def _forget_call(self) -> None:
        """Every field one call sets: blank at first, and again before the next call."""
        self.plan: CallPlan | None = None
        self.call_sid: str | None = None
        self.shell: CallShell | None = None
        self._claimed = False  # a handshake was accepted: no second stream may join
        self._attached = False
        self._stream_due = 0.0  # monotonic: when a stream that has not come is given up
        self._dial_settled = asyncio.Event()  # the CallSid known, or the dial given up
        self._hang_up_when_dialed = False  # ended before Twilio's create answered
        self._rest_hangup: asyncio.Task[None] | None = None
        self._stream_lost = False  # the watchdog ended it: no stream, no word from Twilio
        self._hung_up_unanswered = False  # hung up (API, console) before its stream joined
        self._given_up = False  # never prepared in time: a late prepare is refused
        self._canceled_by: str | None = None  # hung up while preparing: not to be dialed
        # Hung up once handed out for a call, before its ``prepare`` came: call -> by whom.
        # (Several: a late word about the actor's last call must not hide this one's.)
        self._canceled_early: dict[str, str] = {}
        self._dial_abandoned = False  # the wrap-up stopped waiting for the CallSid
        self._carrier_status: str | None = None  # a final status read from Twilio itself
        self._watch_began = 0.0  # monotonic: when the watchdog started waiting
        self._answer_grace = False  # Twilio said in-progress, no stream yet: waited once
        self._answered = False  # Twilio said in-progress: a stream should come
        self._refused: str | None = None  # why a handshake for this call was refused
        self._delivered = 0  # actions of this call a report delivered: the next one's seq
        # How many at the head of _pending went in a report not (yet) known recorded.
        self._unconfirmed = 0
        self._failing_since: float | None = None  # monotonic: the recorder's outage began
        self._retry_wait = REPORT_INTERVAL_S  # the flusher's pause: doubles while failing
        self._dropped = 0  # actions the bounded backlog let go
        self._sender = secrets.token_hex(8)  # this actor serving this call, to the recorder
        self._flusher: asyncio.Task[None] | None = None
        self._wall_offset = time.time() - time.monotonic()
        self._prepared = asyncio.Event()
        self._connected = asyncio.Event()
        self._stream_started = asyncio.Event()  # its `start` passed: the call is answered
        self._watchdog: asyncio.Task[None] | None = None
        self._wrapping_up: asyncio.Task[str] | None = None

    # -- lifecycle, called by the pool and the call control ----------------

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Open the media server; returns the address the edge should splice to."""
        self._host = host
        self._server = await serve_media(host, 0, self._check_handshake, self._media)
        return self.media_address()

    async def recycle(self, max_calls: int) -> tuple[str, int] | None:
        """After ``wait_finished``: ready for another call, on a new media port (so no
        connection of the last call can reach the next), or None to be retired: after
        ``max_calls`` calls, or with reports the recorder has not taken."""
        if self._wrapping_up is None or not self._wrapping_up.done():
            raise LocalProtocolError(f"slot {self.slot} has no finished call to recycle")
        if self.shell is None or self.calls_served >= max_calls or self._pending:
            return None  # never prepared (a half-opened session?): a fresh actor is safer
        self._forget_call()
        return await self.start(self._host)

    def media_address(self) -> tuple[str, int]:
        assert self._server is not None, "start() first"
        return self._server.address

    async def prepare(self, plan: CallPlan) -> str:
        """Open and configure the Realtime session while the phone rings; the one-time
        token the call's stream must present.

        The session is open once the service said ``session.created``: one it refuses
        (a wrong key is refused after the upgrade, with an error and a close 3000) is a
        ``RealtimeServiceError`` naming the cause, so the call is never dialed.

        Asked again for the same call (Twilio retried its webhook, or someone replayed a
        captured one), it is the first plan's token: every answer gives the one token, so
        no number of replays can push out the one Twilio acts on.
        """
        if self.plan is not None and self.plan.call_id == plan.call_id:
            await self._prepared.wait()
            if self.shell is None:
                raise LocalProtocolError(f"call {plan.call_id} could not be prepared")
            if self._attached or self.shell.finished.is_set():
                raise LocalProtocolError(f"call {plan.call_id} already has its stream")
            return self.plan.stream_token
        if self.plan is not None:
            raise LocalProtocolError(f"slot {self.slot} already serves call {self.plan.call_id}")
        if self._given_up:
            raise LocalProtocolError(f"slot {self.slot} gave up waiting for its call")
        if (by := self._canceled_early.get(plan.call_id)) is not None:
            self._prepared.set()  # with no shell: the wrap-up retires this actor
            raise CallCanceled(f"call {plan.call_id} was hung up ({by}) before it was dialed")
        self.plan = plan
        # Read the wall clock as the call begins: a warm actor may have waited through a
        # step of it (NTP), and its events would all be stamped off by that much.
        self._wall_offset = time.time() - time.monotonic()
        config = PolicyConfig(
            session=SessionConfig(
                instructions=plan.instruction,
                voice=plan.voice,
                model=self.settings.openai_realtime_model,  # the URL's: it cannot change
            ),
            greeting=plan.greeting,
            max_call_s=plan.max_duration_s,
            caller_silence_s=plan.caller_silence_s,
            session_max_s=self.settings.openai_session_max_s,
            session_renew_margin_s=self.settings.openai_session_renew_margin_s,
            stream_token=plan.stream_token,
        )
        try:
            socket = await self.open_realtime()
            if self._given_up:  # too late: the wrap-up has let this call go
                with contextlib.suppress(Exception):
                    await socket.close(1000, "call given up")
                raise LocalProtocolError(f"call {plan.call_id} was given up while preparing")
            if self._canceled_by is not None:
                with contextlib.suppress(Exception):
                    await socket.close(1000, "call hung up")
                raise CallCanceled(
                    f"call {plan.call_id} was hung up ({self._canceled_by}) before it was dialed"
                )
        except BaseException:
            self._prepared.set()  # with no shell: the wrap-up retires this actor
            raise
        self.shell = CallShell(CallBridge(config), self, call_id=plan.call_id)
        self.shell.start_realtime(socket)
        self._flusher = asyncio.ensure_future(self._flush_reports())
        # From here, not from ``dialed``: an ingress lost before it dialed ends no call.
        self._watch_began = time.monotonic()
        self._expect_stream()
        self._watchdog = asyncio.ensure_future(self._await_stream())
        self._prepared.set()
        return plan.stream_token

    # Each names its call: an actor is recycled, so a late word about its last call (a
    # hang-up racing the call's end, a repeated status callback) must not reach the next.

    async def dialed(self, call_id: str, call_sid: str) -> None:
        """Twilio accepted the call: bind the stream to its CallSid, and wait for it."""
        if self._serves(call_id) and self._dial_abandoned:
            # Later than the wrap-up waited: the call is over here, so end it at Twilio,
            # now, in this request (no task of this call outlives its wrap-up).
            try:
                await self._rest_hang_up(call_sid)
            except Exception as exc:
                log.error(
                    "a call dialed too late to be used may still ring: hanging it up "
                    "through Twilio failed: %s",
                    exc,
                    extra={"call_id": call_id},
                )
            return
        if not self._serves(call_id) or self.shell is None or self._dial_settled.is_set():
            return
        self.call_sid = call_sid
        self.shell.bridge.policy.expect_call_sid(call_sid)
        self._dial_settled.set()
        if self._hang_up_when_dialed:  # hung up while Twilio's create was on its way
            self._start_rest_hang_up(call_sid)
        self._expect_stream()

    async def twilio_status(self, call_id: str, status: str) -> bool:
        """A status callback: a call that ends before its stream joined ends here.

        Whether the call is this actor's to end: one winding up a call whose dial failed
        unseen says no, so a call Twilio still rings is ended as an orphan.
        """
        if not self._serves(call_id) or self.shell is None:
            return False
        # Its own to end while live, or while it ends it at Twilio itself (knowing the
        # CallSid, or about to); not once its dial failed unseen (the create timed out).
        live = (
            not self.shell.finished.is_set()
            or self.call_sid is not None
            or (self._hang_up_when_dialed and not self._dial_settled.is_set())
        )
        if status in FINAL_STATUSES:
            self._dial_settled.set()  # also the ingress's word that the dial failed
            if not self._attached:
                self._note_no_stream(status)
                self.shell.feed(CallEnded(status))
        elif not self._attached:  # still ringing (a queued call starts late): wait on
            self._answered = self._answered or status == "in-progress"
            self._expect_stream()
        return live

    def _note_no_stream(self, status: str) -> None:
        """An answered call ending with no stream joined: the callee heard nothing."""
        assert self.shell is not None
        if self.shell.finished.is_set():
            return  # ended already (a status repeated, a hang-up first): noted if it was
        if status != "completed" and not self._answered:
            return  # never answered (busy, no-answer...): its status says it all
        refused = "" if self._refused is None else f" (its handshake was refused: {self._refused})"
        message = f"the call was answered but its media stream never joined{refused}"
        self.record(ProblemNoted("twilio", "no_stream", message, fatal=True), time.monotonic())

    def _expect_stream(self) -> None:
        assert self.plan is not None
        wait = WEB_CONNECT_TIMEOUT_S if self.plan.web else STREAM_WAIT_S
        self._stream_due = max(self._stream_due, time.monotonic() + wait)

    async def hang_up(self, call_id: str, reason: str = "api") -> bool:
        handed_out = self._wrapping_up is not None and not self._wrapping_up.done()
        if self.plan is None and handed_out and not self._given_up:
            # Handed out (the pool named this actor for the call), ``prepare`` on its way.
            self._canceled_early[call_id] = reason
            return True
        if not self._serves(call_id):
            return False
        if self.shell is None:  # its session is opening: ``prepare`` refuses to go on
            if self._prepared.is_set() or self._given_up:
                return False  # it failed to open: the call is not being placed
            self._canceled_by = reason
            return True
        if self.shell.finished.is_set():
            return False
        self._hung_up_unanswered = not self._attached
        self.shell.feed(HangupRequested(reason))
        return True

    def _serves(self, call_id: str) -> bool:
        return self.plan is not None and self.plan.call_id == call_id

    async def describe(self) -> tuple[str | None, tuple[str, int] | None]:
        """For a pool started again after a crash: the call this actor serves (None when
        it is ready for one) and its media address (None before ``start``)."""
        address = None if self._server is None else self._server.address
        if self.plan is None and self._wrapping_up is not None:
            return None, None  # handed out, never prepared: no new pool may hand it out
        return (None if self.plan is None else self.plan.call_id), address

    async def wait_finished(self) -> str:
        """Wait for the call to end, release everything, and report the last of it. A
        second caller (a pool started again after a crash) waits for the same wrap-up."""
        if self._wrapping_up is None:
            self._wrapping_up = asyncio.ensure_future(self._wrap_up())
        return await asyncio.shield(self._wrapping_up)

    async def _wrap_up(self) -> str:
        try:
            # The pool asks for this as it hands the actor out: prepare comes next.
            await asyncio.wait_for(self._prepared.wait(), PREPARE_WAIT_S)
        except TimeoutError:
            self._given_up = True
        if self.shell is None:  # never prepared: nothing ran, nothing to report
            await self._close_server()
            return "not_prepared"
        await self.shell.finished.wait()
        await self.shell.close()
        await self._close_server()
        for task in (self._flusher, self._watchdog):
            if task is not None:
                task.cancel()
        if not self._dial_settled.is_set() and self._hang_up_when_dialed:
            # Hung up while Twilio's create was on its way: its CallSid ends the call.
            try:
                await asyncio.wait_for(self._dial_settled.wait(), DIAL_WAIT_S)
            except TimeoutError:
                self._dial_abandoned = True
        if self._rest_hangup is not None:
            await self._rest_hangup
        ended = self._own_final_status()
        if ended is not None:
            self.record(CallStatusChanged(ended), time.monotonic())
        await self._send_last_reports()
        self.calls_served += 1
        return self.shell.finish_reason or "ended"

    def _own_final_status(self) -> str | None:
        """The final status no Twilio callback will report, for the actor to record."""
        assert self.plan is not None and self.shell is not None
        refused = self.shell.finish_code == 1008  # the stream failed its token check
        if self.plan.web:
            if refused:
                return "failed"
            if self._attached and not self._stream_lost:
                return "completed"
            # Ended by whoever placed it before the page came: the browser did not fail
            # to answer, the call was called off (as Twilio says of a call hung up ringing).
            return "canceled" if self._hung_up_unanswered else "no-answer"
        if self._stream_lost or (self.plan.inbound and refused):
            return "failed"
        if self.plan.inbound:
            # As Twilio ends it (the TwiML has nothing after the stream), or as it said.
            return self._carrier_status or "completed"
        return None  # an outbound call: Twilio's status callback says how it ended

    async def _close_server(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None  # no address until the next start
            server.close()
            await server.wait_closed()

    # -- CallHooks, for the shell ------------------------------------------

    async def run_tool(self, name: str, arguments: str) -> str:
        return json.dumps({"error": f"no tool named {name!r} is available on this call"})

    async def end_call(self, reason: str) -> None:
        # A web call ends by closing its socket (the shell does); a phone call through Twilio.
        if self.plan is None or self.plan.web:
            return
        if self.call_sid is None:
            self._hang_up_when_dialed = True  # Twilio's create has not answered yet
        else:
            self._start_rest_hang_up(self.call_sid)

    def _start_rest_hang_up(self, call_sid: str) -> None:
        # The actor's task, not the shell's (the wrap-up cancels those): a hang-up Twilio
        # throttles is retried to the end, and the wrap-up waits for it.
        if self._rest_hangup is None:
            self._rest_hangup = asyncio.ensure_future(self._hang_up_via_rest(call_sid))

    async def _hang_up_via_rest(self, call_sid: str) -> None:
        try:
            await self._rest_hang_up(call_sid)
        except Exception as exc:  # the phone may still ring: say so on the timeline
            call_id = self.plan.call_id if self.plan else None
            log.warning("hanging up through Twilio failed: %s", exc, extra={"call_id": call_id})
            message = f"hanging up through Twilio failed: {type(exc).__name__}: {exc}"
            self.record(ProblemNoted("twilio", "hangup_failed", message), time.monotonic())

    async def open_realtime(self) -> SessionSocket:
        # The SDK's URL and headers, without importing the SDK (~29 MB per call actor).
        key = self.settings.openai_api_key
        if key is None:
            raise ConfigError("OPENAI_API_KEY is not set")
        base = None if self.settings.openai_base_url is None else str(self.settings.openai_base_url)
        url = realtime_url(base, self.settings.openai_realtime_model)
        return await connect_realtime(url, key.get_secret_value())

    def record(self, action: Action, now: float) -> None:
        if type(action) is PhaseChanged and action.old == CallPhase.AWAITING_ANSWER.value:
            self._stream_started.set()
        self._keep(action, now + self._wall_offset)

    # -- media server ------------------------------------------------------

    def _check_web_token(
        self, plan: CallPlan, headers: Mapping[str, str]
    ) -> tuple[int, str] | dict[str, str]:
        """A browser cannot sign, but it can offer its one-time token as a subprotocol:
        checked here, before the socket is the call's, so a stranger who knows the call
        id can neither hold the call's place nor end it with a wrong token."""
        wanted = (WEB_TOKEN_PROTOCOL + plan.stream_token).encode()
        offered = headers.get("Sec-WebSocket-Protocol", "").split(",")
        if not any(hmac.compare_digest(item.strip().encode(), wanted) for item in offered):
            self._refuse("no valid token offered")
            return HTTPStatus.FORBIDDEN, "offer the call's token as subprotocol token.<token>\n"
        return {"Sec-WebSocket-Protocol": wanted.decode()}

    def _refuse(self, why: str) -> None:
        """A handshake for this call's path refused: logged, and noted on the call's
        timeline once (a prober trying again and again adds nothing to the record)."""
        assert self.plan is not None
        log.warning("media handshake refused: %s", why, extra={"call_id": self.plan.call_id})
        if self._refused is None:
            self._refused = why
            self.record(ProblemNoted("twilio", "stream_refused", why), time.monotonic())

    def _check_handshake(
        self, path: str, headers: Mapping[str, str]
    ) -> tuple[int, str] | dict[str, str] | None:
        plan, shell = self.plan, self.shell
        if plan is None or shell is None or path != f"/media/{plan.call_id}":
            return HTTPStatus.NOT_FOUND, "no such call here\n"
        if shell.finished.is_set():
            return HTTPStatus.GONE, "this call has ended\n"
        if self._claimed:
            return HTTPStatus.CONFLICT, "this call's stream is connected\n"
        # Bytes past ASCII (obs-text, passed on by the edge) make no URL Twilio signed
        # and no token we issued; read on, they would fail the checks below as a 500.
        unreadable = [name for name in CHECKED_HEADERS if not headers.get(name, "").isascii()]
        if unreadable:
            self._refuse(f"{', '.join(unreadable)} not ASCII")
            return HTTPStatus.FORBIDDEN, f"{', '.join(unreadable)} must be ASCII\n"
        accepted: dict[str, str] | None = None
        if plan.web:
            checked = self._check_web_token(plan, headers)
            if isinstance(checked, tuple):
                return checked
            accepted = checked
        else:
            signature = headers.get("X-Twilio-Signature", "")
            url = self._public_url(path, headers)
            if url is None:  # no signature can match: refused as a bad one is, not a 500
                self._refuse("Host / X-Forwarded-Host is no valid host[:port]")
                return HTTPStatus.FORBIDDEN, "Host / X-Forwarded-Host is no valid host[:port]\n"
            if not self._validator.validate(url, {}, signature):
                # Signed for another URL: PUBLIC_URL (or the proxy's forwarded host) is
                # not the one Twilio dialed, or the request is not Twilio's.
                self._refuse(f"X-Twilio-Signature does not match {url[:200]}")
                return HTTPStatus.FORBIDDEN, "invalid X-Twilio-Signature\n"
        # Claimed now, not when the socket task runs: two upgrades checked back to back
        # would otherwise both join, and split the agent's audio between them.
        self._claimed = True
        return accepted

    def _public_url(self, path: str, headers: Mapping[str, str]) -> str | None:
        """The URL Twilio connected to: PUBLIC_URL, else what the proxy forwarded.

        None when the forwarded host makes no URL the validator can read (it parses
        the URL and reads its port, which raises on ``:abc``, ``:99999`` or ``[::1``).
        """
        if self.settings.public_url is not None:
            base = str(self.settings.public_url).rstrip("/")
            scheme, _, rest = base.partition("://")
            return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"
        proto = headers.get("X-Forwarded-Proto", "http").split(",")[0].strip()
        host = headers.get("X-Forwarded-Host") or headers.get("Host", "")
        url = f"{'wss' if proto in ('https', 'wss') else 'ws'}://{host}{path}"
        try:
            _ = urlparse(url).port  # what the validator reads: raises as it would
        except ValueError:
            return None
        return url

    async def _media(self, socket: PicowsSocket) -> None:
        assert self.shell is not None
        self._attached = True
        self._connected.set()
        if self.plan is not None and self.plan.reports_own_status:
            self.record(CallStatusChanged("in-progress"), time.monotonic())
        self.shell.attach_twilio(socket)
        await self.shell.finished.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(socket.wait_closed(), timeout=5.0)

    async def _await_stream(self) -> None:
        """End a call whose stream never starts and of which Twilio says nothing more (a
        lost status callback, a caller gone while the webhook was answered, a socket that
        joined and never sent `start`). Twilio is asked first: a call it still queues or
        rings (a burst over the account's calls per second) is waited for."""
        assert self.plan is not None and self.shell is not None
        while True:
            while (left := self._stream_due - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(self._stream_started.wait(), left)
                    return
                except TimeoutError:
                    pass  # the deadline may have moved meanwhile (a status callback)
            if self._stream_started.is_set() or self.shell.finished.is_set():
                return  # started (or ended) as the deadline came
            status = await self._status_at_twilio()
            if self._stream_started.is_set() or self.shell.finished.is_set():
                return  # started (or ended) while Twilio was asked
            now = time.monotonic()
            if self._stream_due > now:
                continue  # a status callback came meanwhile: wait on from it
            if status in FINAL_STATUSES:
                self._carrier_status = status  # its callback was lost: Twilio's word
                self._dial_settled.set()
                self._note_no_stream(status)
                self.shell.feed(CallEnded(status))
                return
            if now - self._watch_began < STREAM_GIVE_UP_S:  # else: end it, whatever it says
                if status in STILL_COMING:
                    self._stream_due = now + STREAM_WAIT_S
                    continue
                if status == "in-progress" and not self._answer_grace:
                    # Answered just now, its stream still connecting (or the answer's
                    # callback lost): a moment more, once.
                    self._answer_grace = True
                    self._stream_due = now + ANSWER_GRACE_S
                    continue
            break
        self._stream_lost = True
        if self.plan.web:
            self.shell.feed(CallEnded("no-answer"))
            return
        if self.call_sid is None:  # no dial comes this late; should one, it is ended
            self._dial_abandoned = True
            self._dial_settled.set()
        message = f"no media stream started and no final status from Twilio in {STREAM_WAIT_S:g} s"
        self.record(ProblemNoted("twilio", "no_stream", message, fatal=True), time.monotonic())
        self.shell.feed(HangupRequested("no_stream"))

    async def _status_at_twilio(self) -> str | None:
        """The call's status read from Twilio; None for a web call, before the dial, or
        when Twilio cannot say."""
        assert self.plan is not None
        if self.plan.web or self.call_sid is None or self._rest_status is None:
            return None
        try:
            return await self._rest_status(self.call_sid)
        except Exception as exc:  # unknown: give up on the stream as if Twilio said nothing
            log.warning("reading the call's status from Twilio failed: %s", exc)
            return None

    # -- reports -----------------------------------------------------------

    async def _flush_reports(self) -> None:
        while True:
            wait = REPORT_INTERVAL_S
            if self._failing_since is not None:  # backing off, spread over calls
                wait = self._retry_wait * random.uniform(0.5, 1.0)
            await asyncio.sleep(wait)  # a batching period or a back-off, not synchronisation
            # Shielded: stopping the flusher must not drop a batch already on its way.
            await asyncio.shield(self._send_reports())

    async def _send_last_reports(self) -> None:
        """The call's last words (its end, a web call's status): sent until the recorder
        takes them (it may be restarting, its database briefly away), for up to
        ``LAST_REPORT_WAIT_S``; this actor is not recycled or retired before."""
        give_up = time.monotonic() + LAST_REPORT_WAIT_S
        delay = 0.25
        await self._send_reports(give_up)
        while self._pending and time.monotonic() + delay < give_up:
            await asyncio.sleep(delay)  # a back-off between tries, not synchronisation
            delay = min(2 * delay, 5.0)
            await self._send_reports(give_up)
        if self._pending or self._dropped:
            log.error(
                "the last %d actions of the call were not recorded (%d dropped before)",
                len(self._pending),
                self._dropped,
                extra={"call_id": self.plan.call_id if self.plan else None},
            )

    async def _send_reports(self, give_up: float | None = None) -> None:
        """Send what is pending now, ``REPORT_CHUNK`` actions a report, until done, a
        report fails, or ``give_up`` (monotonic) passes. What comes meanwhile waits for
        the next flush: one report an interval, not one per action."""
        async with self._reporting:
            backlog = len(self._pending)
            while backlog > 0 and self.plan is not None:
                left = REPORT_TIMEOUT_S if give_up is None else give_up - time.monotonic()
                if left <= 0:
                    return
                # A report that failed may have been recorded all the same (its answer
                # lost): it goes again as it was, under the same number, for the recorder
                # skips by count what it holds. Only what came after it may change.
                size = self._unconfirmed or min(backlog, REPORT_CHUNK)
                self._unconfirmed = size
                batch = self._pending[:size]
                try:
                    # Bounded: a recorder whose database hangs must not hold the call.
                    await asyncio.wait_for(
                        self.reporter.report(
                            self.plan.call_id, batch, self._delivered, self._sender
                        ),
                        min(REPORT_TIMEOUT_S, left),
                    )
                except Exception as exc:  # the recorder is down: kept for the next try
                    self._report_failed(exc)
                    return
                del self._pending[:size]
                backlog -= size
                self._delivered += size
                self._unconfirmed = 0
                self._report_taken()

    def _report_failed(self, exc: Exception) -> None:
        self._retry_wait = min(2 * self._retry_wait, REPORT_RETRY_MAX_S)
        # What waits behind the unconfirmed report and only live viewers want is stale.
        behind = self._pending[self._unconfirmed :]
        self._pending[self._unconfirmed :] = [e for e in behind if type(e[0]) not in LIVE_ONLY]
        if self._failing_since is None:  # once an outage, not a traceback every try
            self._failing_since = time.monotonic()
            log.warning(
                "reporting to the recorder failed (%s: %s): the call's actions are kept "
                "and sent again, backing off",
                type(exc).__name__,
                exc,
                extra={"call_id": self.plan.call_id if self.plan else None},
            )

    def _report_taken(self) -> None:
        self._retry_wait = REPORT_INTERVAL_S
        if self._failing_since is not None:
            log.warning(
                "the recorder took reports again after %.1f s (%d actions dropped meanwhile)",
                time.monotonic() - self._failing_since,
                self._dropped,
                extra={"call_id": self.plan.call_id if self.plan else None},
            )
            self._failing_since = None

    def _keep(self, action: Action, at: float) -> None:
        """Add to the backlog: compacted while the recorder is away, and bounded."""
        if self._failing_since is not None:
            if type(action) in LIVE_ONLY:
                return  # stale long before it could be sent
            last = self._pending[-1][0] if len(self._pending) > self._unconfirmed else None
            if (
                type(action) is AgentTranscriptGrew
                and type(last) is AgentTranscriptGrew
                and last.item_id == action.item_id
                and last.offset is not None
                and action.offset == last.offset + len(last.delta)
            ):
                # One delta for the run: the same text at the same place, to the store
                # and to viewers, in one action instead of one per token.
                self._pending[-1] = (replace(last, delta=last.delta + action.delta), at)
                return
        if len(self._pending) >= MAX_BACKLOG and not _ends_record(action):
            self._dropped += 1
            if self._dropped == 1:  # the record says so, once
                message = (
                    f"the recorder took no report while {MAX_BACKLOG} actions waited: later "
                    "ones were dropped until it took them (transcript text, timeline)"
                )
                self._pending.append((ProblemNoted("recorder", "backlog_full", message), at))
            return
        self._pending.append((action, at))
