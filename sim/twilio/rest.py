"""The Calls REST API subset twilio-python 9.x uses (protocols.md 2.1-2.4, 2.7, 2.8).

``/2010-04-01/Accounts/{AccountSid}/Calls.json``: POST create (201), GET list
(``resource.list_page``).
``/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``: GET fetch, POST
update, DELETE. ``IncomingPhoneNumbers`` (``numbers.NumbersApi``): the
numbers an inbound call can ring (``Exchange.ring_in``). HTTP Basic auth is
checked before anything else (401/20003).
Bodies are form-encoded with repeated keys kept. Every answer, error or not,
is journaled; errors use the legacy ``{code, message, more_info, status}``.

``/_sim/stats``, ``/_sim/stats/reset`` and ``/_sim/calls`` (no auth) expose
the emulator's own numbers to a benchmark running it as a separate process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .calls import TERMINAL
from .exchange import DEFAULT_TIME_LIMIT_S, DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, Exchange
from .form import Form, first, http_url, int_param, method_param, valid_address
from .numbers import NumbersApi
from .recording import CallRecord
from .resource import call_json, list_page
from .session import DocSource
from .wire import API_VERSION, ApiError

__all__ = ["create_app"]

log = logging.getLogger(__name__)
COLLECTION = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Calls\.json$")
INSTANCE = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Calls/(?P<sid>[^/]+)\.json$")
MAX_TWIML = 4000
STATUS_EVENTS = {"initiated", "ringing", "answered", "completed"}


class CallsApi:
    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.numbers = NumbersApi(exchange)
        config = exchange.config
        self._expected_auth = "Basic " + base64.b64encode(
            f"{config.account_sid}:{config.auth_token}".encode()
        ).decode("ascii")

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        try:
            if path.startswith("/_sim/"):
                return self._respond(request, 200, self._sim(path))
            self._authenticate(request)
            self._throttle()
            text = (await request.body()).decode("utf-8", errors="replace")
            form: Form = parse_qsl(text, keep_blank_values=True)
            status, payload = self._route(request.method, path, request.url.query, form)
            return self._respond(request, status, payload)
        except ApiError as err:
            return self._respond(request, err.status, err.body())
        except Exception as exc:  # a bug of ours: still answer like the service would
            log.exception("emulator error on %s %s", request.method, path)
            error = ApiError(500, 20500, f"Internal Server Error: {type(exc).__name__}")
            return self._respond(request, 500, error.body())

    def _respond(self, request: Request, status: int, payload: object) -> Response:
        self.exchange.journal.write(
            "http", method=request.method, path=request.url.path, status=status, body=payload
        )
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
        if status == 204:
            return Response(status_code=204)
        return JSONResponse(payload, status_code=status, headers=headers)

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        if header != self._expected_auth:
            # Tolerate other spellings of the same credentials (e.g. lowercase scheme).
            scheme, _, value = header.partition(" ")
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ApiError.authenticate() from None
            config = self.exchange.config
            if scheme.lower() != "basic" or decoded != f"{config.account_sid}:{config.auth_token}":
                raise ApiError.authenticate()

    def _throttle(self) -> None:
        self.exchange.requests += 1
        every = self.exchange.config.throttle_429_every
        if every and self.exchange.requests % every == 0:
            raise ApiError.too_many_requests()

    def _route(self, method: str, path: str, query: str, form: Form) -> tuple[int, object]:
        account = self.exchange.config.account_sid
        if match := COLLECTION.match(path):
            if match["account"] != account:
                raise ApiError.not_found(path)
            if method == "POST":
                return 201, call_json(self._create(form))
            if method == "GET":
                return 200, self._list(account, parse_qsl(query, keep_blank_values=True))
            raise ApiError.method_not_allowed(method)
        if match := INSTANCE.match(path):
            call = self.exchange.calls.get(match["sid"])
            if match["account"] != account or call is None:
                raise ApiError.not_found(path)
            if method == "GET":
                return 200, call_json(call)
            if method == "POST":
                return 200, call_json(self._update(call, form))
            if method == "DELETE":
                if call.status not in TERMINAL:
                    raise ApiError.not_modifiable()
                del self.exchange.calls[call.sid]
                return 204, None
            raise ApiError.method_not_allowed(method)
        if (answer := self.numbers.route(method, path, query, form)) is not None:
            return answer
        raise ApiError.not_found(path)

    # -- create --------------------------------------------------------------------------

    def _create(self, form: Form) -> CallRecord:
        to, from_ = first(form, "To"), first(form, "From")
        if not to:
            raise ApiError.missing_to()
        if not valid_address(to):
            raise ApiError.invalid_to(to)
        if not from_:
            raise ApiError.missing_from()
        if not valid_address(from_):
            raise ApiError.invalid_from(from_)
        source = self._source(form, required=True)
        assert source is not None
        for name in ("StatusCallback", "AsyncAmdStatusCallback", "FallbackUrl"):
            value = first(form, name)
            if value is not None and not http_url(value):
                raise ApiError.invalid_url(f"Invalid {name}: {value}")
        for name in ("StatusCallbackMethod", "FallbackMethod", "AsyncAmdStatusCallbackMethod"):
            method_param(form, name)
        events = " ".join(v for k, v in form if k == "StatusCallbackEvent").split()
        if bad := [e for e in events if e not in STATUS_EVENTS]:
            raise ApiError.invalid_parameter("StatusCallbackEvent", bad[0])
        detection = first(form, "MachineDetection")
        if detection is not None and detection not in ("Enable", "DetectMessageEnd"):
            raise ApiError.invalid_parameter("MachineDetection", detection)
        timeout = int_param(form, "Timeout", DEFAULT_TIMEOUT_S, 1, MAX_TIMEOUT_S)
        time_limit = int_param(form, "TimeLimit", DEFAULT_TIME_LIMIT_S, 1, DEFAULT_TIME_LIMIT_S)
        return self.exchange.create_call(to, from_, tuple(form), source, timeout, time_limit)

    def _source(self, form: Form, required: bool) -> DocSource | None:
        url, twiml = first(form, "Url"), first(form, "Twiml")
        if url is not None:  # "If both are provided then twiml will be ignored"
            if not http_url(url):
                raise ApiError.invalid_url(f"Url is not a valid URL: {url}")
            return DocSource(url=url, method=method_param(form, "Method"))
        if twiml is not None:
            if len(twiml) > MAX_TWIML:
                raise ApiError.invalid_parameter("Twiml", f"longer than {MAX_TWIML} characters")
            return DocSource(twiml=twiml)
        if first(form, "ApplicationSid") is not None:
            raise ApiError.invalid_parameter("ApplicationSid", "applications are not emulated")
        if required:
            raise ApiError.invalid_url("A 'Url', 'Twiml' or 'ApplicationSid' parameter is required")
        return None

    # -- update --------------------------------------------------------------------------

    def _update(self, call: CallRecord, form: Form) -> CallRecord:
        session = self.exchange.sessions[call.sid]
        if first(form, "Url") is not None and first(form, "Twiml") is not None:
            raise ApiError.invalid_parameter("Twiml", "Twiml and Url are mutually exclusive")
        status = first(form, "Status")
        if status is not None and status not in ("canceled", "completed"):
            raise ApiError.invalid_parameter("Status", status)
        if call.status in TERMINAL:
            raise ApiError.not_modifiable()
        source = self._source(form, required=False)
        callback = first(form, "StatusCallback")
        if callback is not None and not http_url(callback):
            raise ApiError.invalid_url(f"Invalid StatusCallback: {callback}")
        method = first(form, "StatusCallbackMethod")
        if method is not None:
            method = method_param(form, "StatusCallbackMethod")
        session.set_status_callback(callback, method)
        if first(form, "TimeLimit") is not None:
            limit = int_param(form, "TimeLimit", DEFAULT_TIME_LIMIT_S, 1, DEFAULT_TIME_LIMIT_S)
            session.set_time_limit(float(limit))
        now = asyncio.get_running_loop().time()
        if status == "canceled":
            session.cancel(now)  # no effect on an in-progress call
        elif status == "completed":
            session.hang_up(now, "api")
        elif source is not None:
            session.redirect(source)
        return call

    # -- list ----------------------------------------------------------------------------

    def _list(self, account: str, query: Form) -> dict[str, object]:
        page_size = int_param(query, "PageSize", 50, 1, 1000)
        page = int_param(query, "Page", 0, 0, 1 << 30)
        return list_page(list(self.exchange.calls.values()), account, query, page, page_size)

    def _sim(self, path: str) -> object:
        if path == "/_sim/stats/reset":
            self.exchange.stats.reset()
            return {"reset": True}
        if path == "/_sim/stats":
            return {**self.exchange.stats.snapshot(), "active_calls": self.exchange.active_calls}
        if path == "/_sim/calls":
            return [
                {"sid": c.sid, "to": c.to, "status": c.status.value, "end_reason": c.end_reason}
                for c in self.exchange.calls.values()
            ]
        raise ApiError.not_found(path)


def create_app(exchange: Exchange) -> Starlette:
    api = CallsApi(exchange)
    methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", api.handle, methods=methods)])
