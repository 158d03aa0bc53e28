"""Reading the REST API's form-encoded bodies and query strings (protocols.md 2.1, 2.7).

Shared by the Calls and IncomingPhoneNumbers resources: repeated keys are
kept (``Form``), and every bad value becomes an ``ApiError`` in Twilio's
legacy shape, never an exception of ours.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import phonenumbers

from .wire import ApiError

__all__ = ["Form", "e164", "first", "http_url", "int_param", "method_param", "valid_address"]

Form = list[tuple[str, str]]


def first(form: Form, name: str) -> str | None:
    return next((v for k, v in form if k == name), None)


def valid_address(value: str) -> bool:
    """E.164 phone numbers (any possible number), or client:/sip: addresses."""
    if value.startswith(("client:", "sip:")):
        return len(value) > value.index(":") + 1
    if not value.startswith("+"):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(value, None))
    except phonenumbers.NumberParseException:
        return False


def e164(number: str) -> str:
    """``number`` in E.164 if it parses as a phone number, else unchanged."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def int_param(form: Form, name: str, default: int, low: int, high: int) -> int:
    raw = first(form, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError.invalid_parameter(name, raw) from None
    if value < low:
        raise ApiError.invalid_parameter(name, raw)
    return min(value, high)


def method_param(form: Form, name: str, default: str = "POST") -> str:
    value = (first(form, name) or default).upper()
    if value not in ("GET", "POST"):
        raise ApiError.invalid_parameter(name, value)
    return value
