"""Small wire-format helpers shared by the emulator's REST, webhook and stream parts.

Sids, RFC 2822 / ISO 8601 dates, Twilio's legacy error JSON and request
signing (protocols.md 1.6, 2.4, 2.7). The error codes marked *unverified*
are the ones protocols.md 2.7 lists as unconfirmed; the emulator uses them
consistently so a bridge can at least branch on them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from twilio.request_validator import RequestValidator

__all__ = [
    "ApiError",
    "iso8601",
    "more_info",
    "new_sid",
    "rfc2822",
    "sign",
    "utc_now",
]

API_VERSION = "2010-04-01"


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two-letter prefix + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def rfc2822(when: datetime | None) -> str | None:
    """``Tue, 31 Aug 2010 20:36:28 +0000``, as the Calls API and callbacks use."""
    return None if when is None else format_datetime(when.astimezone(UTC))


def iso8601(when: datetime) -> str:
    """``2025-10-08T13:54:12.345Z``, as stream status callbacks use."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def more_info(code: int) -> str:
    return f"https://www.twilio.com/docs/errors/{code}"


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` exactly as twilio-python's validator recomputes it."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


@dataclass(frozen=True, slots=True)
class ApiError(Exception):
    """A REST error in Twilio's legacy shape ``{code, message, more_info, status}``."""

    status: int
    code: int
    message: str

    def body(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": more_info(self.code),
            "status": self.status,
        }

    # -- the errors the emulator raises --------------------------------------------------

    @classmethod
    def authenticate(cls) -> ApiError:
        return cls(401, 20003, "Authenticate")

    @classmethod
    def not_found(cls, path: str) -> ApiError:
        return cls(404, 20404, f"The requested resource {path} was not found")

    @classmethod
    def too_many_requests(cls) -> ApiError:
        return cls(429, 20429, "Too Many Requests")

    @classmethod
    def missing_to(cls) -> ApiError:
        return cls(400, 21201, "No 'To' number is specified")

    @classmethod
    def missing_from(cls) -> ApiError:
        return cls(400, 21213, "No 'From' number is specified")  # unverified

    @classmethod
    def invalid_to(cls, number: str) -> ApiError:
        return cls(400, 21211, f"Invalid 'To' Phone Number: {number}")

    @classmethod
    def invalid_from(cls, number: str) -> ApiError:
        return cls(400, 21212, f"Invalid 'From' Phone Number: {number}")

    @classmethod
    def missing_phone_number(cls) -> ApiError:
        return cls(400, 21421, "A 'PhoneNumber' or 'AreaCode' is required")  # unverified

    @classmethod
    def invalid_phone_number(cls, number: str) -> ApiError:
        return cls(400, 21421, f"PhoneNumber is invalid: {number}")  # unverified

    @classmethod
    def number_not_available(cls, number: str) -> ApiError:
        # Already this account's: it cannot be provisioned twice.
        return cls(400, 21422, f"PhoneNumber is not available: {number}")  # unverified

    @classmethod
    def invalid_url(cls, message: str) -> ApiError:
        return cls(400, 21205, message)  # unverified for the "missing" case

    @classmethod
    def invalid_parameter(cls, name: str, value: str) -> ApiError:
        return cls(400, 20001, f"Invalid parameter {name}: {value!r}")  # unverified

    @classmethod
    def not_modifiable(cls) -> ApiError:
        return cls(400, 21220, "Call is not in-progress. Cannot redirect.")

    @classmethod
    def method_not_allowed(cls, method: str) -> ApiError:
        return cls(405, 20004, f"Method not allowed: {method}")
