"""Bearer-token authentication for the call API and the event streams.

HTTP: ``Authorization: Bearer <token>``; anything else is 401 with a
``WWW-Authenticate`` challenge (RFC 6750 §3). WebSocket: the same header, or,
because browsers cannot set headers on a WebSocket, the subprotocol
``bearer.<token>``, which the server must echo when it accepts. Tokens are
never read from a query string: URLs end up in proxy logs and browser history.

Over HTTP the token is checked before anything reads the request's body
(:class:`BearerGate`): a client without one cannot make the server parse
JSON, and learns nothing from a malformed or oversized body but 401.

Tokens are compared with :func:`hmac.compare_digest` against every configured
token (no early exit), so timing says nothing about which one nearly matched.
Twilio webhooks are not bearer-authenticated; ``serve.twilio_webhooks`` checks
their signatures instead.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from switchboard.errors import ConfigError
from switchboard.settings import Settings

__all__ = [
    "SUBPROTOCOL_PREFIX",
    "BearerGate",
    "TokenChecker",
    "WebSocketAuth",
    "bearer_dependency",
    "bearer_token",
    "tokens_from_settings",
    "websocket_auth",
]

SUBPROTOCOL_PREFIX = "bearer."
_REALM = 'Bearer realm="switchboard"'


def tokens_from_settings(settings: Settings) -> tuple[str, ...]:
    """The API tokens configured in ``SWITCHBOARD_API_TOKEN`` (one, or several comma-separated)."""
    if settings.switchboard_api_token is None:
        return ()
    raw = settings.switchboard_api_token.get_secret_value()
    return tuple(t.strip() for t in raw.split(",") if t.strip())


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class TokenChecker:
    def __init__(self, tokens: Iterable[str]) -> None:
        accepted = tuple(tokens)
        if not accepted:
            raise ConfigError(
                "no API token configured: set SWITCHBOARD_API_TOKEN (the call API refuses "
                "to run unauthenticated)"
            )
        if any(not t or t != t.strip() for t in accepted):
            raise ConfigError("API tokens must be non-empty and carry no surrounding whitespace")
        self._tokens = tuple(t.encode() for t in accepted)

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = presented.encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched


_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="The Switchboard API token (SWITCHBOARD_API_TOKEN)",
)


def _require(checker: TokenChecker, credentials: HTTPAuthorizationCredentials | None) -> None:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": _REALM},
        )
    if not checker.accepts(credentials.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid bearer token",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )


def bearer_dependency(checker: TokenChecker) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that admits a request carrying an accepted bearer token.

    It declares the scheme in the OpenAPI description too. FastAPI reads and parses
    the body before it runs dependencies: :class:`BearerGate` checks first."""

    async def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(_scheme),  # noqa: B008
    ) -> None:
        _require(checker, credentials)

    return require_token


class BearerGate:
    """ASGI middleware: the dependency's 401 for a request to one of ``routes`` that
    has no accepted token, answered before anything reads the body (the body limit
    included: add this middleware after ``BodyLimit``, to run first)."""

    def __init__(self, app: ASGIApp, checker: TokenChecker, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.checker = checker
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FULL: a method no route takes stays 405, an unknown path 404.
        if scope["type"] == "http" and any(r.matches(scope)[0] is Match.FULL for r in self.routes):
            request = Request(scope)
            try:
                _require(self.checker, await _scheme(request))
            except HTTPException as exc:
                response = await http_exception_handler(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class WebSocketAuth:
    accepted: bool
    subprotocol: str | None = None  # echo it in the accept when set
    reason: str = ""


def websocket_auth(
    checker: TokenChecker, authorization: str | None, subprotocols: Sequence[str]
) -> WebSocketAuth:
    """Decide on a WebSocket upgrade from its ``Authorization`` header and offered subprotocols."""
    # Only a Bearer header decides: a browser resends a proxy's Basic credentials on the
    # upgrade too, and the console's token is then in the subprotocol.
    if (token := bearer_token(authorization)) is not None:
        if checker.accepts(token):
            return WebSocketAuth(True)
        return WebSocketAuth(False, reason="invalid bearer token")
    for offered in subprotocols:
        if offered.startswith(SUBPROTOCOL_PREFIX):
            if checker.accepts(offered[len(SUBPROTOCOL_PREFIX) :]):
                return WebSocketAuth(True, subprotocol=offered)
            return WebSocketAuth(False, reason="invalid bearer token")
    return WebSocketAuth(
        False, reason="missing bearer token (Authorization header or bearer.<token> subprotocol)"
    )
