"""Switchboard's ingress: the call API, Twilio's webhooks and the live event streams.

``build_app(deps)`` returns a plain FastAPI app with no Ray in it;
``serve.deployment.SwitchboardIngress`` serves it under ``@serve.ingress`` with
Ray-backed ports in ``AppDeps``. Routes:

- ``POST /calls`` (and the original UI's ``POST /create-call``), ``GET /calls``,
  ``GET /calls/{id}``, ``POST /calls/{id}/hangup``: bearer token required, and
  checked before the body is read (``serve.auth.BearerGate``).
- ``WS /calls/{id}/events``, ``WS /events``: bearer token in the header or the
  ``bearer.<token>`` subprotocol (``serve.event_stream``).
- ``POST /twilio/voice|status/{id}|amd/{id}``: Twilio signature required
  (``serve.twilio_webhooks``).
- ``POST /calls/web``: a web call, the browser as the phone (bearer token).
- ``GET /healthz`` (the process answers), ``GET /readyz`` (store and call
  control ready), ``GET /openapi.json``, ``GET /docs``: open.

Placing a call writes the record first and then asks ``CallControl.place``;
a call that cannot be placed stays in the store as ``failed`` with the cause
in its timeline, and the client gets 502 naming the cause. Once placed, the
call is answered 201 even if reading it back fails: a 503 would invite a
retry, and a second real call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from datetime import UTC
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Query, WebSocket, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from serve.api_docs import mount_api_docs
from serve.api_errors import BodyLimit, install_error_handlers, validation_error
from serve.auth import BearerGate, TokenChecker, bearer_dependency
from serve.call_journal import (
    error_code,
    publish_created,
    record_canceled,
    record_failure,
    utc_now,
)
from serve.console import mount_console
from serve.event_stream import stream_events
from serve.ports import AppDeps
from serve.schemas import (
    MAX_DURATION_S,
    CallCreate,
    CallDetailOut,
    CallOut,
    CallPageOut,
    CallStatus,
    CreateCallAlias,
    ErrorOut,
    HangupOut,
    HealthOut,
    PlaceFailedOut,
    ReadyOut,
    WebCallCreate,
    WebCallOut,
)
from serve.twilio_webhooks import twilio_router
from switchboard.errors import CallCanceled, ServiceError, StoreError
from switchboard.store import CallRecord, NewCall
from switchboard.store.queries import decode_cursor
from switchboard.store.records import Direction
from switchboard.store.status import is_terminal

__all__ = ["MAX_BODY_BYTES", "READY_TIMEOUT_S", "build_app"]

log = logging.getLogger("switchboard.serve")
MAX_BODY_BYTES = 256 * 1024
READY_TIMEOUT_S = 2.0
MAX_PAGE = 200
T = TypeVar("T")
WEB_PHONE = "browser"  # a web call's to/from: the console user's browser
_Responses = dict[int | str, dict[str, Any]]
_CALL_API_ERRORS: _Responses = {
    401: {"model": ErrorOut, "description": "No bearer token, or not an accepted one"},
    503: {"model": ErrorOut, "description": "The call store is unavailable"},
}
_NOT_FOUND: _Responses = {404: {"model": ErrorOut, "description": "No call has this id"}}
_BODY_ERRORS: _Responses = {
    400: {"model": ErrorOut, "description": "The body is not JSON"},
    413: {"model": ErrorOut, "description": f"The body is over {MAX_BODY_BYTES} bytes"},
    415: {"model": ErrorOut, "description": "The body is not sent as application/json"},
}
_PLACING: _Responses = _BODY_ERRORS | {
    409: {"model": PlaceFailedOut, "description": "Hung up before it was placed"},
    502: {"model": PlaceFailedOut, "description": "Could not be placed; recorded as failed"},
}


def build_app(deps: AppDeps) -> FastAPI:
    """The ingress application; raises ``ConfigError`` when no API token is configured."""
    checker = TokenChecker(deps.api_tokens)
    app = FastAPI(
        title="Switchboard",
        summary="AI phone calls: place calls, follow them live, read their records",
        version="0.1.0",
        docs_url=None,  # mount_api_docs: Swagger UI from this origin, not a CDN
        redoc_url=None,
    )
    calls = _calls_router(deps)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(BearerGate, checker=checker, routes=calls.routes)  # runs first
    install_error_handlers(app)
    app.include_router(_health_router(deps))
    app.include_router(
        calls,
        dependencies=[Depends(bearer_dependency(checker))],
        responses=_CALL_API_ERRORS,
    )
    app.include_router(twilio_router(deps))
    _publish_duration_limit(app, deps.settings.max_call_duration_s)

    @app.websocket("/calls/{call_id}/events")
    async def call_events(websocket: WebSocket, call_id: str) -> None:
        await stream_events(websocket, deps, checker, call_id)

    @app.websocket("/events")
    async def all_events(websocket: WebSocket) -> None:
        await stream_events(websocket, deps, checker, None)

    mount_api_docs(app, "Switchboard")
    mount_console(app)  # last: `/` and `/console/*` shadow no API route
    return app


def _publish_duration_limit(app: FastAPI, limit_s: float) -> None:
    """Publish the deployment's MAX_CALL_DURATION_S as ``max_duration_s``'s maximum.

    The models carry only the absolute cap (``MAX_DURATION_S``); the handlers refuse
    anything over the setting, and the OpenAPI description says so."""
    maximum = min(MAX_DURATION_S, math.floor(limit_s))
    describe = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = describe()
        schemas = spec["components"]["schemas"]
        for model in (CallCreate, WebCallCreate):
            field = schemas[model.__name__]["properties"]["max_duration_s"]
            for option in field.get("anyOf", [field]):
                if "maximum" in option:
                    option["maximum"] = maximum
            field["description"] += f" ({maximum} s here)"
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _health_router(deps: AppDeps) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=HealthOut)
    async def healthz() -> HealthOut:
        return HealthOut()

    @router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
    async def readyz() -> JSONResponse:
        checks = {
            "store": await _check(deps.store.list_calls(limit=1)),
            "control": await _check(deps.control.ready()),
        }
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
            content=ReadyOut(ready=ready, checks=checks).model_dump(),
        )

    # HEAD too (uptime checkers and load balancers probe with it), kept out of the
    # OpenAPI description, where it would repeat GET's operation id.
    router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)
    return router


async def _check(probe: Awaitable[object]) -> str:
    """``ok``, or why not: a probe answering ``False``, raising, or hanging."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            result = await probe
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_S} s"
    except Exception as exc:
        # The kind only: /readyz is open, and a driver's message can name hosts and users.
        log.warning("readiness probe failed: %s: %s", type(exc).__name__, exc)
        return type(exc).__name__
    return "not ready" if result is False else "ok"


def _calls_router(deps: AppDeps) -> APIRouter:
    router = APIRouter(tags=["calls"])

    @router.post(
        "/calls",
        status_code=status.HTTP_201_CREATED,
        response_model=CallOut,
        responses=_PLACING,
        summary="Place an outbound call",
    )
    async def place_call(body: CallCreate) -> JSONResponse:
        return await _place(deps, body)

    @router.post(
        "/create-call",
        status_code=status.HTTP_201_CREATED,
        response_model=CallOut,
        responses=_PLACING,
        summary="Place an outbound call (the original UI's contract; prefer POST /calls)",
    )
    async def create_call_alias(body: CreateCallAlias) -> JSONResponse:
        return await _place(deps, body.to_call())

    @router.post(
        "/calls/web",
        status_code=status.HTTP_201_CREATED,
        response_model=WebCallOut,
        responses=_PLACING,
        summary="Start a web call: the browser is the phone (Media Streams over WebSocket)",
    )
    async def start_web_call(body: WebCallCreate) -> JSONResponse:
        return await _start_web(deps, body)

    @router.get("/calls", response_model=CallPageOut, summary="List calls, newest first")
    async def list_calls(
        status_: Annotated[CallStatus | None, Query(alias="status")] = None,
        direction: Direction | None = None,
        to: Annotated[str | None, Query(max_length=32)] = None,
        search: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        created_after: AwareDatetime | None = None,
        created_before: AwareDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> CallPageOut:
        for name, value in (("created_after", created_after), ("created_before", created_before)):
            if value is not None:
                try:
                    value.astimezone(UTC)
                except OverflowError:
                    raise validation_error(
                        "query", name, "is out of range once in UTC", value.isoformat()
                    ) from None
        if cursor is not None:
            try:
                decode_cursor(cursor)
            except StoreError:
                raise validation_error(
                    "query", "cursor", "is not a cursor this API returned", cursor
                ) from None
        page = await deps.store.list_calls(
            status=status_,
            direction=direction,
            to=to,
            search=search,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            cursor=cursor,
        )
        return CallPageOut.from_page(page)

    @router.get(
        "/calls/{call_id}",
        response_model=CallDetailOut,
        responses=_NOT_FOUND,
        summary="One call: status, timeline, transcript, usage and cost",
    )
    async def get_call(call_id: str) -> CallDetailOut | JSONResponse:
        detail = await deps.store.get_call(call_id)
        if detail is None:
            return _unknown(call_id)
        return CallDetailOut.from_detail(detail)

    @router.post(
        "/calls/{call_id}/hangup",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=HangupOut,
        responses=_NOT_FOUND
        | {
            409: {"model": ErrorOut, "description": "The call is no longer live"},
            502: {"model": ErrorOut, "description": "Twilio refused to end it"},
        },
        summary="Hang up a live call",
    )
    async def hang_up(call_id: str) -> HangupOut | JSONResponse:
        # A live call can be ended with the store down: its actor is asked all the same
        # (and knows only the ids of calls it serves); without the record, an id no actor
        # serves can be neither unknown (404) nor ended (409), so the store's 503 stands.
        try:
            detail = await deps.store.get_call(call_id)
        except StoreError as exc:
            if not await deps.control.hang_up(call_id):
                raise
            log.warning("call %s: hung up without its record, the store failing: %s", call_id, exc)
        else:
            if detail is None:
                return _unknown(call_id)
            if is_terminal(detail.call.status):
                return _conflict(f"call {call_id} has already ended ({detail.call.status})")
            placing = detail.call.status == "queued"  # its actor may not be asked for yet
            if not await deps.control.hang_up(call_id, placing):
                return _conflict(
                    f"call {call_id} is no longer live: no call actor serves it (its record, "
                    f"still {detail.call.status}, is settled within minutes)"
                )
        at = utc_now()
        try:  # best effort: the call is ending, and its actor records how it ended
            await deps.store.append_event(call_id, "hangup_requested", at, {"by": "api"})
        except StoreError as exc:
            log.warning("call %s: noting the hang-up request failed: %s", call_id, exc)
        deps.events.publish(call_id, {"type": "call.hangup_requested", "at": at, "by": "api"})
        return HangupOut(id=call_id)

    return router


def _unknown(call_id: str) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": f"unknown call id {call_id!r}"})


def _conflict(message: str) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": message})


async def _place(deps: AppDeps, body: CallCreate) -> JSONResponse:
    settings = deps.settings
    caller = body.from_ or settings.twilio_from_number
    if caller is None:
        raise validation_error(
            "body", "from", "is required because TWILIO_FROM_NUMBER is not set", None
        )
    _check_duration(deps, body.max_duration_s)
    call = await deps.store.create_call(
        NewCall(
            direction="outbound",
            to=body.to,
            from_=caller,
            instruction=body.instruction,
            voice=body.voice,
            greeting=body.greeting,
            metadata=dict(body.metadata),
            max_duration_s=body.max_duration_s,
        )
    )
    placed = await _hand_over(deps, call, deps.control.place(call))
    if isinstance(placed, JSONResponse):
        return placed
    log.info("call %s placed to %s", call.id, call.to)
    placed_call = CallOut.from_record(await _read_back(deps, call))
    return JSONResponse(
        status_code=status.HTTP_201_CREATED,
        content=placed_call.model_dump(mode="json", by_alias=True),
        headers={"Location": f"/calls/{call.id}"},
    )


async def _start_web(deps: AppDeps, body: WebCallCreate) -> JSONResponse:
    _check_duration(deps, body.max_duration_s)
    call = await deps.store.create_call(
        NewCall(
            direction="web",
            to=WEB_PHONE,
            from_=WEB_PHONE,
            instruction=body.instruction,
            voice=body.voice,
            greeting=body.greeting,
            metadata=dict(body.metadata),
            max_duration_s=body.max_duration_s,
        )
    )
    ticket = await _hand_over(deps, call, deps.control.start_web(call))
    if isinstance(ticket, JSONResponse):
        return ticket
    log.info("web call %s started", call.id)
    body_out = WebCallOut(
        call=CallOut.from_record(await _read_back(deps, call)),
        media_url=ticket.media_url,
        call_sid=ticket.call_sid,
        stream_token=ticket.stream_token,
    )
    return JSONResponse(
        status_code=status.HTTP_201_CREATED,
        content=body_out.model_dump(mode="json", by_alias=True),
        headers={"Location": f"/calls/{call.id}"},
    )


def _check_duration(deps: AppDeps, max_duration_s: int | None) -> None:
    limit = deps.settings.max_call_duration_s
    if max_duration_s is not None and max_duration_s > limit:
        raise validation_error(
            "body",
            "max_duration_s",
            f"must be at most {limit:g} s (MAX_CALL_DURATION_S)",
            max_duration_s,
        )


async def _hand_over(deps: AppDeps, call: CallRecord, handing: Awaitable[T]) -> T | JSONResponse:
    """Publish the new call, then place or start it; the 502 answer if that failed.

    A client that goes away meanwhile does not stop it: Twilio may already be ringing
    the phone, and the outcome is recorded either way."""
    publish_created(deps, call)
    placing = asyncio.ensure_future(_settle(deps, call, handing))
    _settling.add(placing)  # held: a task nobody holds can be collected mid-run
    placing.add_done_callback(_settling.discard)
    outcome = await asyncio.shield(placing)
    if isinstance(outcome, ServiceError):
        return await _place_failed(deps, call.id, outcome)
    if isinstance(outcome, CallCanceled):
        return await _place_failed(deps, call.id, outcome, status.HTTP_409_CONFLICT)
    return outcome


_settling: set[asyncio.Task[object]] = set()  # placings whose request went away


async def _settle(
    deps: AppDeps, call: CallRecord, handing: Awaitable[T]
) -> T | ServiceError | CallCanceled:
    try:
        return await handing
    except ServiceError as exc:
        await record_failure(deps, call.id, "placing", exc)
        return exc
    except CallCanceled as exc:  # hung up (POST /calls/{id}/hangup) before the dial
        await record_canceled(deps, call.id, exc)
        return exc
    except BaseException as exc:
        # A bug: the call must not stay "queued" forever.
        await asyncio.shield(record_failure(deps, call.id, "placing", exc))
        raise


async def _place_failed(
    deps: AppDeps,
    call_id: str,
    exc: ServiceError | CallCanceled,
    status_code: int = status.HTTP_502_BAD_GATEWAY,
) -> JSONResponse:
    detail = await deps.store.get_call(call_id)
    if detail is None:  # pragma: no cover - the record was written above
        raise StoreError(f"call {call_id} vanished after it failed")
    body = PlaceFailedOut(
        detail=f"the call could not be placed: {type(exc).__name__}: {exc}",
        error=type(exc).__name__,
        code=error_code(exc),
        call=CallOut.from_record(detail.call),
    )
    return JSONResponse(
        status_code=status_code, content=body.model_dump(mode="json", by_alias=True)
    )


async def _read_back(deps: AppDeps, call: CallRecord) -> CallRecord:
    """The placed call as stored now (placing may have moved its status or set its
    Twilio sid), else as it was written: the call is under way, and a 503 here would
    have a client that retries place a second one (or lose a web call's ticket)."""
    try:
        detail = await deps.store.get_call(call.id)
    except StoreError as exc:
        log.warning("call %s: placed, but reading it back failed: %s", call.id, exc)
        return call
    return call if detail is None else detail.call
