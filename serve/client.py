"""A small client of the call API, for the ``switchboard call`` command and scripts.

::

    async with SwitchboardClient("http://127.0.0.1:8000", token) as client:
        call = await client.place_call("+15551234567", "Book a cleaning for Jane")
        async for event in client.stream_events(call.id):
            print(event["type"], event)

Responses are parsed with the server's own models (``serve.schemas``). Every
failure is an :class:`ApiError` (a ``ServiceError``): an HTTP error status
with the server's ``detail``, a refused WebSocket upgrade, or a server that
cannot be reached. ``stream_events`` ends when the server ends the stream
(after a ``subscription.dropped`` message for a subscriber that fell behind,
or at shutdown); an unknown call id raises ``ApiError`` with status 404.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncGenerator
from datetime import datetime
from types import TracebackType
from typing import TypeVar, cast
from urllib.parse import quote

import httpx
import orjson
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidStatus,
    WebSocketException,
)

from serve.event_stream import ACK_EVERY, CLOSE_UNKNOWN_CALL
from serve.ports import SUBSCRIPTION_DROPPED
from serve.schemas import CallDetailOut, CallOut, CallPageOut, HangupOut, WebCallOut
from switchboard.errors import ServiceError

__all__ = ["ApiError", "SwitchboardClient"]

JSONObject = dict[str, object]
M = TypeVar("M", bound=BaseModel)


class ApiError(ServiceError):
    """The Switchboard API refused a request, or could not be reached (``status`` None)."""

    def __init__(self, status: int | None, message: str, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _message(response: httpx.Response) -> tuple[str, object]:
    try:
        body: object = response.json()
    except ValueError:
        body = response.text
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's 422: one line per problem
        detail = "; ".join(_problem(d) for d in detail)
    return f"HTTP {response.status_code}: {detail}", body


def _problem(problem: object) -> str:
    """One of a 422's problems as ``field: message``, without naming the field twice when
    the message already starts with it ("to must start with + ...")."""
    if not isinstance(problem, dict):
        return str(problem)
    field = ".".join(str(part) for part in problem.get("loc", ())[1:])
    message = str(problem.get("msg"))
    named = not field or message == field or message.startswith(f"{field} ")
    return message if named else f"{field}: {message}"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, made once per process: making one loads the
    CA bundle, 25-35 ms of blocked event loop per client (more under load), which a
    program watching many calls at once, each with a client, would pay many times."""
    return httpx.create_ssl_context()


class SwitchboardClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        try:
            url = httpx.URL(self._base)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ApiError(None, f"{base_url!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ApiError(None, f"{base_url!r} is not an http:// or https:// URL")
        if url.port is not None and not 1 <= url.port <= 65535:  # httpx takes any number
            raise ApiError(None, f"{base_url!r}: {url.port} is not a port number (1-65535)")
        if not token.isascii() or not token.isprintable():
            raise ApiError(None, "the API token must be printable ASCII")
        self._http = httpx.AsyncClient(
            base_url=self._base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
            verify=tls_context(),
        )

    async def __aenter__(self) -> SwitchboardClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: object) -> JSONObject:
        try:
            response = await self._http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ApiError(None, f"cannot reach Switchboard at {self._base}: {exc}") from exc
        if not response.is_success:  # an error, or a redirect (to https?) not followed
            message, body = _message(response)
            if response.is_redirect:
                message += f" (redirected to {response.headers.get('location')!r})"
            raise ApiError(response.status_code, message, body)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                response.status_code,
                f"{self._base} answered {method} {path} with something other than the "
                f"call API's JSON: is it Switchboard? ({response.text[:80]!r})",
            )
        return cast(JSONObject, body)

    def _parse(self, model: type[M], body: JSONObject) -> M:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise ApiError(
                None, f"{self._base} answered in a shape this client does not know: {exc}"
            ) from None

    async def place_call(
        self,
        to: str,
        instruction: str,
        *,
        from_: str | None = None,
        voice: str | None = None,
        greeting: str | None = None,
        metadata: JSONObject | None = None,
        max_duration_s: int | None = None,
    ) -> CallOut:
        """Place an outbound call; ``ApiError`` 502, the failed call in ``body``, if it fails."""
        payload = _given(
            to=to,
            instruction=instruction,
            voice=voice,
            greeting=greeting,
            metadata=metadata,
            max_duration_s=max_duration_s,
        )
        if from_ is not None:
            payload["from"] = from_
        return self._parse(CallOut, await self._request("POST", "/calls", json=payload))

    async def start_web_call(
        self,
        instruction: str,
        *,
        voice: str | None = None,
        greeting: str | None = None,
        metadata: JSONObject | None = None,
        max_duration_s: int | None = None,
    ) -> WebCallOut:
        """Start a web call: the caller connects to ``media_url`` and speaks Media Streams."""
        payload = _given(
            instruction=instruction,
            voice=voice,
            greeting=greeting,
            metadata=metadata,
            max_duration_s=max_duration_s,
        )
        return self._parse(WebCallOut, await self._request("POST", "/calls/web", json=payload))

    async def get_call(self, call_id: str) -> CallDetailOut:
        return self._parse(CallDetailOut, await self._request("GET", f"/calls/{_id(call_id)}"))

    async def list_calls(self, **filters: str | int | datetime | None) -> CallPageOut:
        """Filters as in ``GET /calls``: status, direction, to, search, created_after,
        created_before (aware datetimes), limit, cursor."""
        params = {
            k: v.isoformat() if isinstance(v, datetime) else v
            for k, v in filters.items()
            if v is not None
        }
        return self._parse(CallPageOut, await self._request("GET", "/calls", params=params))

    async def hang_up(self, call_id: str) -> HangupOut:
        path = f"/calls/{_id(call_id)}/hangup"
        return self._parse(HangupOut, await self._request("POST", path))

    def _ws_url(self, path: str) -> str:
        scheme, rest = self._base.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"

    async def stream_events(self, call_id: str | None = None) -> AsyncGenerator[JSONObject, None]:
        """Live events of one call (recent ones first), or of every call for ``None``."""
        url = self._ws_url("/events" if call_id is None else f"/calls/{_id(call_id)}/events")
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with connect(url, additional_headers=headers, open_timeout=self._timeout) as ws:
                try:
                    received = 0
                    async for raw in ws:
                        received += 1
                        if received % ACK_EVERY == 0:  # the server lets a silent viewer go
                            # Closed meanwhile: the next read says how (or ends quietly).
                            with contextlib.suppress(ConnectionClosed):
                                await ws.send(orjson.dumps({"ack": received}).decode())
                        try:
                            event = orjson.loads(raw)
                        except orjson.JSONDecodeError:
                            event = None
                        if not isinstance(event, dict):
                            raise ApiError(None, f"event stream sent a non-object: {raw!r:.80}")
                        yield event
                        if event.get("type") == SUBSCRIPTION_DROPPED:
                            return
                except ConnectionClosedError as exc:
                    if exc.rcvd is not None and exc.rcvd.code == CLOSE_UNKNOWN_CALL:
                        raise ApiError(404, f"event stream: {exc.rcvd.reason}") from exc
                    raise ApiError(None, f"event stream broke: {exc}") from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ApiError(status, f"event stream refused: HTTP {status}") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ApiError(None, f"cannot open the event stream at {url}: {exc}") from exc


def _id(call_id: str) -> str:
    """A call id as one path segment, whatever it holds (``#``, ``?``, ``/``)."""
    return quote(call_id, safe="")


def _given(**fields: object) -> JSONObject:
    """A request body of the fields that were given (``None`` means "use the default")."""
    return {name: value for name, value in fields.items() if value is not None}
