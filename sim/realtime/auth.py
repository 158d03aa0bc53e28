"""Bearer-token checks with the service's error bodies (HTTP 401)."""

from __future__ import annotations

from typing import Any

__all__ = ["auth_error", "mask_key"]

MISSING = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header"
    " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with"
    " blank username) if you're accessing the API from your browser and are prompted for a"
    " username and password. You can obtain an API key from"
    " https://platform.openai.com/account/api-keys."
)


def mask_key(key: str) -> str:
    """The service shows only the ends of a rejected key."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def auth_error(header: str | None, expected: str | None) -> dict[str, Any] | None:
    """None if the ``Authorization`` header is acceptable, else the 401 body."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return {
            "error": {
                "message": MISSING,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    if expected is not None and token != expected:
        return {
            "error": {
                "message": f"Incorrect API key provided: {mask_key(token)}. You can find your API"
                " key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
    return None
