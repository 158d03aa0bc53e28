"""Twilio's webhooks: inbound calls, status callbacks, asynchronous AMD results.

Status callbacks come to ``/twilio/status/{call_id}`` for the calls we place, and to
``/twilio/status`` for a number's own callback (an inbound call's), which finds the
call by its CallSid.

Every webhook is checked with twilio-python's ``RequestValidator`` before
anything else happens (protocols.md 1.6, 2.5): the signature covers the URL
Twilio requested (query string included) plus the sorted form parameters.
The key is ``TWILIO_AUTH_TOKEN``, or, for a webhook whose
``X-Twilio-Webhooks-Signature-Settings`` header names a SharedKey (a Webhook
Rule's), that key's secret from ``TWILIO_WEBHOOK_SHARED_KEYS`` (a key it does
not have is 403). Only POST is served, Twilio's default method. Behind a proxy
the app sees its own URL, not Twilio's, so the signed URL is rebuilt: from ``PUBLIC_URL``
(the public address of this app's root) when it is set, else from
``X-Forwarded-Proto`` / ``X-Forwarded-Host`` / ``Host``. The validator itself
accepts the URL with or without the default port. A missing or wrong
signature is 403 and nothing is created or changed, and so is a host or port
in those headers that makes no URL (``:abc``, ``99999``, ``[::1``): no
signature can match it. Only then do unknown call ids get 404 and malformed
fields 400.

An inbound call's voice webhook is answered within ``ANSWER_DEADLINE_S``, before
Twilio gives up on it: a call no actor could take in time is rejected busy. A
retried webhook (same CallSid) gets the answer the first got, but only while the
call rings: once its stream joined or it ended, the request is a replay and is
rejected without touching the call.

Forms are parsed with the standard library (the bodies are small and always
``application/x-www-form-urlencoded``), which keeps repeated keys for the
signature. Build the callback URLs handed to Twilio with
:func:`status_callback_url` and :func:`amd_callback_url`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlparse

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import (
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.twiml.voice_response import VoiceResponse

from serve.call_journal import publish_created, record_canceled, record_failure, utc_now
from serve.ports import AppDeps
from switchboard.errors import CallCanceled, ServiceError, StoreError, SwitchboardError
from switchboard.store import CallRecord, NewCall
from switchboard.store.status import STATUSES

__all__ = [
    "amd_callback_url",
    "public_request_url",
    "status_callback_url",
    "twilio_router",
    "voice_url",
]

log = logging.getLogger("switchboard.serve")

Params = ImmutableMultiDict[str, str]
# Twilio waits 15 s for a webhook's answer, then plays the caller an application error
# (and drops whatever comes later). Counted from the request's arrival (the signature
# check and the store come first); what remains is for letting the call's actor go and
# recording the call. (A free slot can take 60 s, a Realtime session 10 s to open.)
ANSWER_DEADLINE_S = 10.0
RELEASE_WAIT_S = 2.0  # for that letting go: its Ray calls are quick when Ray is well
# An inbound call's statuses before its stream joined: a voice webhook for a call past
# them is a replay (Twilio asks once per call, retrying only an answer it did not get).
_ANSWERABLE = frozenset({"queued", "initiated", "ringing"})
MAX_FORM_FIELDS = 200
# Fields of a status callback worth keeping in the timeline (not the geo fields).
_STATUS_DETAIL = {
    "CallSid": "call_sid",
    "CallbackSource": "callback_source",
    "CallDuration": "call_duration_s",
    "SipResponseCode": "sip_response_code",
    "AnsweredBy": "answered_by",
    "ErrorCode": "error_code",
    "ErrorMessage": "error_message",
}
_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        },
    }
}


def _base(public_url: str) -> str:
    return public_url.rstrip("/")


def status_callback_url(public_url: str, call_id: str) -> str:
    return f"{_base(public_url)}/twilio/status/{call_id}"


def amd_callback_url(public_url: str, call_id: str) -> str:
    return f"{_base(public_url)}/twilio/amd/{call_id}"


def voice_url(public_url: str) -> str:
    return f"{_base(public_url)}/twilio/voice"


def _first(value: str | None) -> str | None:
    # A chain of proxies appends: "https, http"; the first hop is the client's.
    if value is None:
        return None
    head = value.split(",", 1)[0].strip()
    return head or None


DEFAULT_PORTS = {"http": "80", "https": "443"}


def public_request_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio requested, as it signed it."""
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    query = request.scope.get("query_string", b"").decode("latin-1")
    if public_url:
        base = _base(public_url)
    else:
        headers = request.headers
        proto = _first(headers.get("x-forwarded-proto")) or request.url.scheme
        host = _first(headers.get("x-forwarded-host")) or headers.get("host") or request.url.netloc
        port = _first(headers.get("x-forwarded-port"))
        # Some balancers (AWS's) send the public port apart and a Host without it.
        if port and ":" not in host.rpartition("]")[2] and port != DEFAULT_PORTS.get(proto):
            host = f"{host}:{port}"
        base = f"{proto}://{host}"
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def _shared_key_id(header: str | None) -> str | None:
    """The SharedKey id in ``X-Twilio-Webhooks-Signature-Settings`` ("key=KS...,
    algorithm=HMAC_SHA256"); None when the auth token signed (no header, or no key)."""
    for part in (header or "").split(","):
        name, equals, value = part.partition("=")
        if equals and name.strip() == "key" and value.strip():
            return value.strip()
    return None


def _malformed(url: str) -> str | None:
    """Why the validator could not read ``url`` (it parses it and reads its port), if so."""
    try:
        _ = urlparse(url).port  # what the validator reads: raises as it would
    except ValueError as exc:  # a port that is no number or out of range, a broken [IPv6]
        return str(exc)
    return None


async def _read_params(request: Request) -> Params:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    raw = await request.body()
    if media_type != "application/x-www-form-urlencoded" and (media_type or raw):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"Twilio webhooks are application/x-www-form-urlencoded, got {media_type!r}",
        )
    try:
        text = raw.decode("ascii")  # urlencoded bodies are ASCII; UTF-8 is percent-encoded
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed form body: {exc}") from None
    return ImmutableMultiDict(pairs)


class _Webhooks:
    def __init__(self, deps: AppDeps) -> None:
        self.deps = deps
        settings = deps.settings
        self.public_url = None if settings.public_url is None else str(settings.public_url)
        token = settings.twilio_auth_token
        self.validator = None if token is None else RequestValidator(token.get_secret_value())
        self.shared = {
            key_id: RequestValidator(secret.get_secret_value())
            for key_id, secret in settings.webhook_shared_keys.items()
        }
        self.answer_deadline_s = ANSWER_DEADLINE_S

    async def signed(self, request: Request) -> Params:
        params = await _read_params(request)
        settings_header = request.headers.get(SIGNATURE_SETTINGS_HEADER)
        validator = self._validator(_shared_key_id(settings_header))
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing X-Twilio-Signature header")
        url = public_request_url(request, self.public_url)
        problem = _malformed(url)
        if problem is not None:
            # Only the proxy headers can make it so (PUBLIC_URL is validated): a client's
            # doing, refused like a bad signature rather than failing the request.
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "X-Twilio-Signature cannot match: Host / X-Forwarded-Host / X-Forwarded-Port "
                f"make no valid URL ({problem}): {url[:200]!r}",
            )
        algorithm = get_signature_algorithm(settings_header)
        if not validator.validate(url, params, signature, algorithm=algorithm):
            # The URL helps fix a PUBLIC_URL or proxy header mismatch; it is not secret.
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"X-Twilio-Signature does not match for {url}"
            )
        return params

    def _validator(self, key_id: str | None) -> RequestValidator:
        """The auth token's, or the SharedKey's the signature settings header names."""
        if key_id is None:
            if self.validator is None:
                raise HTTPException(
                    status.HTTP_503_SERVICE_UNAVAILABLE,
                    "TWILIO_AUTH_TOKEN is not set, so Twilio's signatures cannot be checked",
                )
            return self.validator
        validator = self.shared.get(key_id)
        if validator is None:
            # Ids are no secret: the operator sees which one to add.
            log.warning(
                "a webhook signed with SharedKey %r was refused: TWILIO_WEBHOOK_SHARED_KEYS has %s",
                key_id[:64],
                ", ".join(map(repr, sorted(self.shared))) or "no keys",
            )
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"X-Twilio-Signature is signed with SharedKey {key_id[:64]!r}, which "
                "TWILIO_WEBHOOK_SHARED_KEYS does not have",
            )
        return validator

    async def call(self, call_id: str) -> CallRecord:
        detail = await self.deps.store.get_call(call_id)
        if detail is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown call id {call_id!r}")
        return detail.call

    async def adopt_sid(self, call: CallRecord, call_sid: str | None) -> None:
        """Remember Twilio's sid if placing the call has not yet (callbacks can win that race)."""
        if call.twilio_sid is None and call_sid:
            _check_length("CallSid", call_sid)
            if await self.deps.store.find_by_twilio_sid(call_sid) is None:
                await self.deps.store.set_twilio_sid(call.id, call_sid)

    async def voice(self, request: Request) -> Response:
        deadline = asyncio.get_running_loop().time() + self.answer_deadline_s
        params = await self.signed(request)
        call_sid, caller, called = (_required(params, k) for k in ("CallSid", "From", "To"))
        for name, value in (("CallSid", call_sid), ("From", caller), ("To", called)):
            _check_length(name, value)
        store = self.deps.store
        # A retried webhook finds the call it created the first time; of two at once, the
        # second's insert fails on the unique CallSid and it finds the first's.
        call = await store.find_by_twilio_sid(call_sid)
        if call is None:
            new = NewCall(direction="inbound", to=called, from_=caller, twilio_sid=call_sid)
            try:
                call = await store.create_call(new)
            except StoreError:
                call = await store.find_by_twilio_sid(call_sid)
                if call is None:  # not the race: the store itself failed
                    raise
            else:
                publish_created(self.deps, call)
                reported = params.get("CallStatus")
                if reported in STATUSES:
                    await store.update_status(call.id, reported, utc_now(), {"call_sid": call_sid})
        elif call.direction != "inbound" or call.status not in _ANSWERABLE:
            # A replay (a captured request sent again): answered again, it would fail a
            # live call's record, or take an actor and a Realtime session for one over.
            log.warning(
                "call %s: voice webhook for CallSid %s refused: the call is %s %s, past its "
                "answer (a replayed request?)",
                call.id,
                call_sid,
                call.direction,
                call.status,
            )
            return _twiml(_reject())
        try:
            async with asyncio.timeout_at(deadline):
                twiml = await self.deps.control.answer_inbound(call, call_sid)
        except TimeoutError:
            await self._release(call.id)
            late = ServiceError(
                f"no call actor was ready within {self.answer_deadline_s:g} s, before Twilio "
                "gives up on the webhook: the caller was rejected busy"
            )
            await record_failure(self.deps, call.id, "answering", late)
            twiml = _reject("busy")
        except (ServiceError, CallCanceled) as exc:
            if isinstance(exc, CallCanceled):  # hung up through the API while preparing
                await record_canceled(self.deps, call.id, exc)
            else:
                await record_failure(self.deps, call.id, "answering", exc)
            # Reject before answering: the caller hears busy and is not billed.
            twiml = _reject("busy")
        return _twiml(twiml)

    async def _release(self, call_id: str) -> None:
        """Let go of what an answer given up on was taking: the hang-up of a call being
        placed, so an actor still starting goes to the next call and one handed out
        closes its Realtime session (nobody will stream to it)."""
        try:
            await asyncio.wait_for(self.deps.control.hang_up(call_id, placing=True), RELEASE_WAIT_S)
        except (SwitchboardError, TimeoutError) as exc:
            log.warning(
                "call %s: letting go of its actor after the answer's deadline failed (its "
                "stream never comes: the actor gives the call up): %s",
                call_id,
                str(exc) or type(exc).__name__,
            )

    async def status_callback(self, call_id: str, request: Request) -> Response:
        """The per-call callback: ours, set on every call we place."""
        return await self._status(call_id, await self.signed(request))

    async def number_status(self, request: Request) -> Response:
        """A number's own status callback ("Call status changes" on the number, which is
        where Twilio reports an inbound call): the call is found by its CallSid."""
        params = await self.signed(request)
        call_sid = _required(params, "CallSid")
        _check_length("CallSid", call_sid)
        call = await self.deps.store.find_by_twilio_sid(call_sid)
        if call is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call has CallSid {call_sid!r}")
        return await self._status(call.id, params)

    async def _status(self, call_id: str, params: Params) -> Response:
        reported = _required(params, "CallStatus")
        if reported not in STATUSES:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"CallStatus {reported!r} is not a call status; expected one of "
                f"{', '.join(sorted(STATUSES))}",
            )
        sequence = _optional_int(params, "SequenceNumber")
        at = _status_time(_timestamp(params.get("Timestamp")), utc_now())
        detail: dict[str, object] = {
            name: params[field] for field, name in _STATUS_DETAIL.items() if params.get(field)
        } | ({} if sequence is None else {"sequence": sequence})
        try:
            call = await self.call(call_id)  # an unknown call is 404: no actor to tell
            await self.adopt_sid(call, params.get("CallSid"))
            applied = await self.deps.store.update_status(call_id, reported, at, detail)
        except SwitchboardError:
            # Told even so (Twilio does not send a status again): a call that ended
            # before its stream would otherwise hold its actor.
            await self.deps.control.on_twilio_status(call_id, reported, dict(params))
            raise
        self.deps.events.publish(
            call_id,
            {"type": "call.status", "at": at, "status": reported, "applied": applied}
            | ({} if sequence is None else {"sequence": sequence}),
        )
        await self.deps.control.on_twilio_status(call_id, reported, dict(params))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    async def amd(self, call_id: str, request: Request) -> Response:
        params = await self.signed(request)
        call = await self.call(call_id)
        answered_by = _required(params, "AnsweredBy")
        _check_length("AnsweredBy", answered_by)
        duration = _optional_int(params, "MachineDetectionDuration")
        at = utc_now()
        data: dict[str, object] = {"answered_by": answered_by} | (
            {} if duration is None else {"machine_detection_duration_ms": duration}
        )
        await self.adopt_sid(call, params.get("CallSid"))
        await self.deps.store.append_event(call_id, "amd", at, data)
        self.deps.events.publish(call_id, {"type": "call.amd", "at": at} | data)
        await self.deps.control.on_amd_result(call_id, answered_by, dict(params))
        return Response(status_code=status.HTTP_204_NO_CONTENT)


def _reject(reason: str | None = None) -> str:
    """``<Response><Reject/></Response>``. (twilio-python's ``reject()`` returns the
    ``<Reject>`` it nests, not the response: alone it is no TwiML Twilio accepts.)"""
    response = VoiceResponse()
    response.reject(reason=reason)
    return str(response)


def _twiml(twiml: str) -> Response:
    return Response(twiml, media_type="text/xml")


def _required(params: Params, name: str) -> str:
    value = params.get(name)
    if not value:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"missing form field {name}")
    return value


def _check_length(name: str, value: str, limit: int = 64) -> None:
    if len(value) > limit:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"form field {name} is longer than {limit} characters"
        )


def _optional_int(params: Params, name: str) -> int | None:
    value = params.get(name)
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"form field {name} must be a non-negative integer, got {value[:32]!r}",
        )
    return int(value)


def _timestamp(value: str | None) -> datetime | None:
    """Twilio's RFC 2822 ``Timestamp`` ("Wed, 08 Oct 2025 13:54:12 +0000")."""
    if not value:
        return None
    try:
        at = email.utils.parsedate_to_datetime(value)
        if at.tzinfo is not None:
            at.astimezone(UTC)  # a year near 1 or 9999 may not be in UTC's range
    except (TypeError, ValueError, OverflowError):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"form field Timestamp is not an RFC 2822 date: {value[:64]!r}",
        ) from None
    # "-0000" means "UTC, zone unknown" (RFC 2822 §3.3) and parses as naive.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _status_time(stamped: datetime | None, received: datetime) -> datetime:
    """When a status happened: Twilio's ``Timestamp`` counts whole seconds, so one that
    arrives within its own second is stamped when it arrived (at most that late, and
    ordered after the actor's events of the same second that came before it); one
    that arrived later than that (a retry, a slow network) keeps Twilio's time."""
    if stamped is None:
        return received
    return received if stamped <= received < stamped + timedelta(seconds=1) else stamped


def twilio_router(deps: AppDeps) -> APIRouter:
    """The webhooks; mount at the app's root (the URLs above assume it)."""
    hooks = _Webhooks(deps)
    router = APIRouter(prefix="/twilio", tags=["twilio webhooks"])
    routes = (
        ("/voice", hooks.voice, 200, "Inbound call: answer with TwiML"),
        ("/status/{call_id}", hooks.status_callback, 204, "Call status callback"),
        ("/status", hooks.number_status, 204, "A number's status callback (inbound calls)"),
        ("/amd/{call_id}", hooks.amd, 204, "Asynchronous answering-machine detection result"),
    )
    for path, endpoint, status_code, summary in routes:
        router.add_api_route(
            path,
            endpoint,
            methods=["POST"],  # Twilio's default; the callbacks are configured with POST
            status_code=status_code,
            summary=summary,
            response_class=Response,
            openapi_extra=_FORM_BODY,
        )
    return router
