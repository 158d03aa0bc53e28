"""Every error the ingress answers is JSON that says what was wrong.

FastAPI's 422 shape (``{"detail": [{"loc", "msg", "type", ...}]}``) is kept
for bodies and query strings that fail validation. The cases FastAPI words
poorly get their own status and a plain sentence: a body that is not JSON at
all (400), a body sent with another content type (415), a missing body. Errors
from our own tree map to statuses once, here: a refused remote service is
502, a failing call store 503.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.call_journal import error_code
from switchboard.errors import ServiceError, StoreError
from switchboard.store.validation import text_problem

__all__ = ["BodyLimit", "install_error_handlers", "validation_error"]

log = logging.getLogger("switchboard.serve")
_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}
_MAX_ECHO = 200


def validation_error(where: str, field: str, message: str, value: object) -> RequestValidationError:
    """A 422 in FastAPI's shape for a check that only the handler can make."""
    return RequestValidationError(
        [{"type": "value_error", "loc": (where, field), "msg": message, "input": value}]
    )


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _echoable(value: object) -> bool:
    """Whether an invalid input is worth echoing: short, and representable in JSON text."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):  # and encodable: a lone surrogate would fail the answer
        return len(value) <= _MAX_ECHO and text_problem(value) is None
    return value is None or isinstance(value, bool | int)


def _detail(status_code: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"detail": message})


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = error.get("type")
        if kind == "json_invalid":
            why = (error.get("ctx") or {}).get("error", "decode error")
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            return _detail(
                status.HTTP_400_BAD_REQUEST, f"request body is not valid JSON: {why}{where}"
            )
        if loc == ("body",) and kind in _NOT_AN_OBJECT:
            content_type = request.headers.get("content-type")
            if not _is_json(content_type):
                got = repr(content_type) if content_type else "no Content-Type"
                return _detail(
                    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                    f"request body must be JSON with Content-Type: application/json, got {got}",
                )
            error["msg"] = "request body must be a JSON object"
        if loc == ("body",) and kind == "missing":
            error["msg"] = "request body is required: a JSON object"
        if "input" in error and not _echoable(error["input"]):
            # A NaN would make the error itself unserializable; a long text only adds noise.
            del error["input"]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": jsonable_encoder(errors)},
    )


async def _on_service_error(request: Request, exc: Exception) -> JSONResponse:
    code = error_code(exc)
    return JSONResponse(
        status_code=status.HTTP_502_BAD_GATEWAY,
        content={"detail": str(exc) or type(exc).__name__, "error": type(exc).__name__}
        | ({"code": code} if code is not None else {}),
    )


async def _on_store_error(request: Request, exc: Exception) -> JSONResponse:
    # A WebSocket's scope has no method: never fail inside the error handler itself.
    method = request.scope.get("method", "WEBSOCKET")
    log.error("call store error on %s %s: %s", method, request.url.path, exc)
    return _detail(status.HTTP_503_SERVICE_UNAVAILABLE, f"call store error: {exc}")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback and re-raises after sending this.
    return _detail(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error; see the server log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(StoreError, _on_store_error)
    app.add_exception_handler(Exception, _on_unexpected)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with a JSON 413.

    A declared ``Content-Length`` over the limit is refused before the app
    runs; a chunked body is cut off when it crosses the limit (the handler's
    read raises, and the app's error handling answers). Starlette's own
    limiter answers in plain text, hence this one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        # isascii: "²".isdigit() is true, and int() refuses it.
        number = declared is not None and declared.isascii() and declared.isdigit()
        if declared is not None and (not number or int(declared) > self.max_bytes):
            problem = self._too_large() if number else "invalid Content-Length"
            code = 413 if number else 400
            await JSONResponse(status_code=code, content={"detail": problem})(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self._too_large())
            return message

        await self.app(scope, limited, send)
