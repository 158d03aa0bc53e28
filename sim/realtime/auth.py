"""Bearer-token checks, with the service's answers to a missing or wrong key.

Two answers, as the service gives them:

- the HTTP endpoints (``client_secrets``...) answer ``401`` with an error
  body (``auth_error``);
- the Realtime WebSocket **accepts the upgrade** and then refuses the session
  in-band (``session_refusal``): its first and only event is an ``error``,
  then the socket closes with code 3000 and the reason
  ``<error.type>.<error.code>``. For a wrong key: ``invalid_request_error`` /
  ``invalid_api_key``, "Incorrect API key provided: <masked key>. You can find
  your API key at https://platform.openai.com/account/api-keys.", close 3000
  ``invalid_request_error.invalid_api_key``. Followed (protocols.md says
  nothing of it):
  https://github.com/twilio-samples/speech-assistant-openai-realtime-api-python/issues/4
  (the websockets client: "received 3000 (registered)
  invalid_request_error.invalid_api_key"),
  https://github.com/openai/openai-realtime-api-beta/issues/2 ("If I use a
  random string for the API key I get a successful connection and a different
  error message as a websocket message"), and the openai SDK itself (3.57,
  ``resources/realtime/realtime.py``: "A successful upgrade can still be
  followed by an admission error"; 3000 is not among its recoverable close
  codes, so ``async for`` re-raises websockets' ``ConnectionClosedError``).
  With no ``Authorization`` header the error has ``code: null`` and the
  message "Missing bearer or basic authentication in header"
  (https://github.com/davidmigloz/langchain_dart/issues/599,
  https://community.openai.com/t/real-time-api-connectiion-problem/971032);
  its close is not reported anywhere: 3000 with the reason
  ``invalid_request_error`` is our guess, by the same rule.
"""

from __future__ import annotations

from typing import Any

from sim.realtime.validation import ClientError

__all__ = ["REFUSAL_CLOSE_CODE", "auth_error", "mask_key", "session_refusal"]

REFUSAL_CLOSE_CODE = 3000  # the service's close for a session it refuses in-band

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header"
    " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with"
    " blank username) if you're accessing the API from your browser and are prompted for a"
    " username and password. You can obtain an API key from"
    " https://platform.openai.com/account/api-keys."
)
MISSING_ON_WEBSOCKET = "Missing bearer or basic authentication in header"


def mask_key(key: str) -> str:
    """The service shows only the ends of a rejected key."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def _incorrect(token: str) -> str:
    return (
        f"Incorrect API key provided: {mask_key(token)}. You can find your API key at"
        " https://platform.openai.com/account/api-keys."
    )


def _token(header: str | None) -> str | None:
    """The bearer token, or None when there is none."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def auth_error(header: str | None, expected: str | None) -> dict[str, Any] | None:
    """None if the ``Authorization`` header is acceptable, else the HTTP 401 body."""
    token = _token(header)
    if token is None:
        code, message = None, MISSING
    elif expected is not None and token != expected:
        code, message = "invalid_api_key", _incorrect(token)
    else:
        return None
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return {"error": error}


def session_refusal(header: str | None, expected: str | None) -> ClientError | None:
    """None if the WebSocket upgrade's ``Authorization`` is acceptable, else the
    ``error`` event the accepted socket carries before its close (see above)."""
    token = _token(header)
    if token is None:
        close = (REFUSAL_CLOSE_CODE, "invalid_request_error")
        return ClientError(None, MISSING_ON_WEBSOCKET, close=close)
    if expected is not None and token != expected:
        close = (REFUSAL_CLOSE_CODE, "invalid_request_error.invalid_api_key")
        return ClientError("invalid_api_key", _incorrect(token), close=close)
    return None
