"""``CallControl`` on Ray: the ingress's hands on live calls.

Placing a call: a warm call actor from the pool opens and configures its
Realtime session (while nothing rings yet), then Twilio dials with TwiML that
connects the stream to ``PUBLIC_URL/media/{call_id}`` and carries a one-time
token; the actor then knows the CallSid its stream must name. A handful of
Ray calls per call, none per frame. A web call is the same without the dial:
the browser gets the media URL, a CallSid and the token instead of Twilio.

Ray hands an actor's exception back wrapped (``RayTaskError``, an instance of the
cause too), its text the remote traceback with pid, address and actor id: what
reaches a call's record and a client is the cause itself, or one line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayError, RayTaskError
from requests import RequestException
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse

from actors.call_actor import CallPlan
from actors.call_metrics import PROBLEMS, MetricsSink
from actors.ray_metrics import RayMetricsSink
from actors.ray_wiring import NAMESPACE, Handle, through_restarts
from actors.twilio_rest import end_call, twilio_call
from serve.call_journal import utc_now
from serve.ports import WebCallTicket
from serve.twilio_webhooks import status_callback_url
from switchboard.errors import (
    CallCanceled,
    ConfigError,
    ServiceError,
    StoreError,
    TwilioServiceError,
)
from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore
from switchboard.store.status import is_terminal

__all__ = ["RayCallControl", "media_url", "pool_ready", "stream_twiml"]

log = logging.getLogger("switchboard.serve")
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
NO_ACTOR = "no call actor could take the call"
INBOUND_INSTRUCTION = "You answer the phone for this business. Be brief and helpful."
# Twilio's TimeLimit counts from the answer, the actor's max duration from the stream's
# start: with this much more, the actor ends the call (and says why), Twilio only backs up.
TIME_LIMIT_GRACE_S = 30
SLOT_WAIT_S = 60.0  # CallPool's create_timeout_s, as RayCallPool makes it: a free slot's wait


def pool_ready(stats: Mapping[str, int]) -> bool:
    """Whether the pool has shown it can run calls: a warm actor, or calls in progress (a
    burst drained it; every slot taken is capacity, the SwitchboardCallSlotsExhausted
    alert's, not readiness), or no warm actors wanted (``WARM_CALL_ACTORS=0``). Not
    ready: a pool that has started no actor yet (booting, or none can start)."""
    return stats["ready"] > 0 or stats["live"] > 0 or stats.get("size", 1) == 0


def media_url(public_url: str, call_id: str) -> str:
    scheme, _, rest = public_url.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/media/{call_id}"


def stream_twiml(url: str, token: str) -> str:
    response, connect = VoiceResponse(), Connect()
    stream = connect.stream(url=url)
    stream.parameter(name="token", value=token)
    response.append(connect)
    return str(response)


class RayCallControl:
    def __init__(self, settings: Settings, store: CallStore, pool: Handle, twilio: Client) -> None:
        if settings.public_url is None:
            raise ConfigError("PUBLIC_URL is needed: Twilio must reach the webhooks and media")
        self.settings = settings
        self.public_url = str(settings.public_url).rstrip("/")
        self.store = store
        self.pool = pool
        self.twilio = twilio
        self.metrics: MetricsSink = RayMetricsSink()

    def noted(self, source: str, reason: str, fatal: bool) -> None:
        tags = {"source": source, "reason": reason, "fatal": "true" if fatal else "false"}
        self.metrics.inc(PROBLEMS, 1, tags)  # the ingress's own: fixed labels, bounded

    async def place(self, call: CallRecord) -> None:
        actor, token = await self._prepare(call, call.instruction)
        limit = call.max_duration_s or self.settings.max_call_duration_s
        try:
            created = await twilio_call(
                self.twilio.calls.create,
                to=call.to,
                from_=call.from_,
                twiml=stream_twiml(media_url(self.public_url, call.id), token),
                status_callback=status_callback_url(self.public_url, call.id),
                status_callback_event=STATUS_EVENTS,
                time_limit=math.ceil(limit) + TIME_LIMIT_GRACE_S,
            )
        except TwilioRestException as exc:
            await _tell_failed(actor, call.id)
            raise TwilioServiceError(f"Twilio refused the call: {exc.msg}", code=exc.code) from exc
        except (TwilioException, RequestException) as exc:
            # Not reached, or no answer in time: the actor lets its slot go. (After a
            # timeout Twilio may still dial: on_twilio_status ends that call.)
            await _tell_failed(actor, call.id)
            raise TwilioServiceError(f"Twilio could not be reached: {exc}") from exc
        # The actor first: it binds the stream to the CallSid and can end the call. The
        # status callbacks also bring the sid, should this write fail.
        try:
            await _dialed(actor, call.id, str(created.sid))
        except ServiceError:
            # No actor for the call Twilio is ringing: end it there (best effort; the
            # call is recorded failed either way).
            with contextlib.suppress(TwilioServiceError):
                await self._end_at_twilio(str(created.sid))
            raise
        try:
            await self.store.set_twilio_sid(call.id, str(created.sid))
        except StoreError as exc:
            log.warning("call %s: storing its CallSid failed: %s", call.id, exc)

    async def answer_inbound(self, call: CallRecord, call_sid: str) -> str:
        instruction = call.instruction or INBOUND_INSTRUCTION
        actor, token = await self._prepare(call, instruction, inbound=True)
        await _dialed(actor, call.id, call_sid)
        return stream_twiml(media_url(self.public_url, call.id), token)

    async def start_web(self, call: CallRecord) -> WebCallTicket:
        # A CallSid of Twilio's shape, so the stream's `start` reads like a phone's.
        call_sid = "CA" + secrets.token_hex(16)
        actor, token = await self._prepare(call, call.instruction, web=True)
        await _dialed(actor, call.id, call_sid)
        return WebCallTicket(media_url(self.public_url, call.id), call_sid, token)

    async def hang_up(self, call_id: str, placing: bool = False) -> bool:
        """End the call; False if nothing serves it. ``placing``: its record says it is
        being placed, so with no actor yet the pool refuses it when it asks for one."""
        actor = await self._actor(call_id)
        if actor is None:  # none yet: the placing stops before the dial
            with _ray_errors("the call pool could not take the hang-up"):
                canceled: bool = await through_restarts(
                    lambda: self.pool.cancel.remote(call_id, placing)
                )
            if canceled:
                return True
            actor = await self._actor(call_id)  # handed out meanwhile
            if actor is None:
                return False
        with _ray_errors("the call's actor did not answer"):  # unreachable for a moment
            try:
                return bool(await actor.hang_up.remote(call_id, "api"))
            except ActorDiedError:  # died since the pool named it: the pool records the end
                return False

    async def on_twilio_status(self, call_id: str, status: str, params: Mapping[str, str]) -> None:
        actor = await self._actor(call_id)
        if actor is not None:
            with _ray_errors("the call's actor did not answer"):  # unreachable for a moment
                try:
                    if await actor.twilio_status.remote(call_id, status):
                        return  # live there: the actor's to act on
                except ActorDiedError:  # the pool records the end
                    log.warning("call %s: its actor died before Twilio's %s", call_id, status)
                    return
        elif await self.is_live(call_id) is not False:
            return  # an actor is being started for it, or the pool cannot tell now
        call_sid = params.get("CallSid")
        if is_terminal(status) or not call_sid:
            return  # over at Twilio too
        # The actor is taken before Twilio dials: a call up at Twilio that no actor serves
        # live is an orphan (a dial whose answer timed out, an actor lost), ringing into
        # nobody.
        await self._end_orphan(call_id, call_sid, status)

    async def on_amd_result(
        self, call_id: str, answered_by: str, params: Mapping[str, str]
    ) -> None:
        return None  # recorded by the ingress; voicemail handling is the agent's (later) job

    async def ready(self) -> bool:
        stats: dict[str, int] = await through_restarts(lambda: self.pool.stats.remote())
        return pool_ready(stats)

    async def is_live(self, call_id: str) -> bool | None:
        serves: bool | None = await through_restarts(lambda: self.pool.serves.remote(call_id))
        return serves

    async def carrier_status(self, call: CallRecord) -> str | None:
        if call.direction == "web" or call.twilio_sid is None:
            return None
        try:
            fetched = await twilio_call(self.twilio.calls(call.twilio_sid).fetch)
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise TwilioServiceError(f"Twilio refused: {exc.msg}", code=exc.code) from exc
        except (TwilioException, RequestException) as exc:
            raise TwilioServiceError(f"Twilio could not be reached: {exc}") from exc
        return str(fetched.status)

    async def end_at_carrier(self, call: CallRecord) -> None:
        if call.twilio_sid is not None:
            await self._end_at_twilio(call.twilio_sid)

    async def _end_at_twilio(self, call_sid: str, status: str | None = None) -> bool:
        """End the call at Twilio (``status``: what it is, if known); False if it was over."""
        try:
            return await end_call(self.twilio, call_sid, status)
        except (TwilioException, RequestException) as exc:
            raise TwilioServiceError(f"hanging up at Twilio failed: {exc}") from exc

    async def _end_orphan(self, call_id: str, call_sid: str, status: str) -> None:
        # Callbacks can come out of order (protocols.md 2.5): a late `ringing` of a call
        # that is over must end nothing. So Twilio is asked what the call is now.
        try:
            status = str((await twilio_call(self.twilio.calls(call_sid).fetch)).status)
        except TwilioRestException as exc:
            if exc.status == 404:
                return  # not Twilio's (any more): nothing rings
            log.warning("call %s: asking Twilio for its status failed: %s", call_id, exc)
        except (TwilioException, RequestException) as exc:  # cannot tell: go by the callback
            log.warning("call %s: asking Twilio for its status failed: %s", call_id, exc)
        if is_terminal(status):
            return
        try:
            if not await self._end_at_twilio(call_sid, status):
                return  # it ended meanwhile
        except TwilioServiceError as exc:  # logged, not raised: Twilio's callback is answered
            log.warning("call %s: no call actor, and ending it at Twilio failed: %s", call_id, exc)
            return
        message = f"Twilio had the call {status} with no call actor on it: ended it there"
        log.warning("call %s: %s", call_id, message)
        problem = {
            "source": "twilio",
            "reason": "orphaned",
            "message": message,
            "fatal": True,
            "call_sid": call_sid,
        }
        self.noted("twilio", "orphaned", True)
        try:
            await self.store.append_event(call_id, "problem", utc_now(), problem)
        except StoreError as exc:
            log.warning("call %s: noting its end at Twilio failed: %s", call_id, exc)

    async def _prepare(
        self, call: CallRecord, instruction: str, *, web: bool = False, inbound: bool = False
    ) -> tuple[Any, str]:
        token = secrets.token_urlsafe(24)
        with _ray_errors(NO_ACTOR):  # the pool is gone, or found no slot
            try:
                # Safe to repeat: a pool that died mid-acquire left the actor unprepared,
                # and the restarted one adopts it as ready.
                acquired: tuple[str, Any] = await through_restarts(
                    lambda: self.pool.acquire.remote(call.id)
                )
            except Exception as exc:
                if isinstance(_unwrapped(exc), TimeoutError):  # no actor could start for it
                    raise ServiceError(
                        f"no call slot became free within {SLOT_WAIT_S:g} s: every one is taken"
                    ) from exc
                raise
        with _ray_errors(NO_ACTOR):  # the actor is gone, or could not open its session
            actor = ray.get_actor(acquired[0], namespace=NAMESPACE)
            # Prepared before (a webhook retried or replayed): the token its first got.
            token = await actor.prepare.remote(
                CallPlan(
                    call_id=call.id,
                    instruction=instruction,
                    stream_token=token,
                    voice=call.voice or "marin",
                    greeting=call.greeting,
                    max_duration_s=float(call.max_duration_s or self.settings.max_call_duration_s),
                    caller_silence_s=self.settings.caller_silence_timeout_s,
                    web=web,
                    inbound=inbound,
                )
            )
        return actor, token

    async def _actor(self, call_id: str) -> Any:
        name: str | None = await through_restarts(lambda: self.pool.actor_name.remote(call_id))
        if name is None:
            return None
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # gone since the pool named it
            return None


async def _tell_failed(actor: Any, call_id: str) -> None:
    """The call was never dialed: its actor ends it and goes back to the pool."""
    with contextlib.suppress(RayError):  # a dead actor has let its slot go already
        await actor.twilio_status.remote(call_id, "failed")


async def _dialed(actor: Any, call_id: str, call_sid: str) -> None:
    with _ray_errors("the call's actor was lost before its stream"):
        await actor.dialed.remote(call_id, call_sid)


def _unwrapped(exc: BaseException) -> BaseException:
    """What the actor raised, without Ray's wrapping."""
    while isinstance(exc, RayTaskError):
        exc = exc.cause
    return exc


def _as_service_error(exc: BaseException, doing: str) -> ServiceError:
    """The actor's own ``ServiceError``, else what went wrong in one line: Ray's errors
    run on over lines of addresses, pids and actor ids, for the log, not the client."""
    cause = _unwrapped(exc)
    if isinstance(cause, ServiceError):
        return cause
    lines = str(cause).strip().splitlines()
    return ServiceError(f"{doing}: {type(cause).__name__}" + (f": {lines[0]}" if lines else ""))


@contextlib.contextmanager
def _ray_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if isinstance(cause := _unwrapped(exc), CallCanceled):  # no failure: as it is
            raise cause from None
        error = _as_service_error(exc, doing)
        if error is exc:  # raised here, not wrapped: as it is
            raise
        log.warning("%s: %s", doing, exc)  # Ray's whole story, for the operator
        raise error from exc
