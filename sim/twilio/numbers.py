"""The IncomingPhoneNumbers resource: the account's numbers and where their calls go.

A minimal 2010-04-01 ``IncomingPhoneNumber``, as twilio-python 9.x reads it
(``twilio/rest/api/v2010/account/incoming_phone_number/__init__.py``: the
instance's fields, the create/update form names, the list filters) and as
the resource page of twilio.com/docs/phone-numbers/api/incomingphonenumber-resource
shows it (``PN`` + 32 hex sids, ``friendly_name`` the national format,
``voice_url: null`` until set, ``status: "in-use"``):

``/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json``: POST create
(201; ``PhoneNumber`` required: buying by ``AreaCode`` is not emulated), GET
list (``PhoneNumber``, with ``*`` for any digit, and ``FriendlyName``
filters). ``.../IncomingPhoneNumbers/{Sid}.json``: GET fetch, POST update
(``""`` clears a URL), DELETE (204). Voice settings are kept: ``VoiceUrl``,
``VoiceMethod``, ``VoiceFallbackUrl``, ``VoiceFallbackMethod``,
``StatusCallback``, ``StatusCallbackMethod``, ``FriendlyName``; the SMS ones
are only echoed. An inbound call to the number (``Exchange.ring_in``) runs on
these settings (``call_params``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import phonenumbers

from switchboard.errors import ConfigError

from .form import Form, e164, first, http_url, int_param, method_param, valid_address
from .resource import page_json
from .wire import API_VERSION, ApiError, new_sid, rfc2822, utc_now

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["InboundCallRefused", "NumbersApi", "PhoneNumberRecord", "number_json"]

COLLECTION = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers\.json$")
INSTANCE = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/IncomingPhoneNumbers/(?P<sid>[^/]+)\.json$"
)
URLS = {  # form name -> field
    "VoiceUrl": "voice_url",
    "VoiceFallbackUrl": "voice_fallback_url",
    "StatusCallback": "status_callback",
    "SmsUrl": "sms_url",
    "SmsFallbackUrl": "sms_fallback_url",
}
METHODS = {
    "VoiceMethod": "voice_method",
    "VoiceFallbackMethod": "voice_fallback_method",
    "StatusCallbackMethod": "status_callback_method",
    "SmsMethod": "sms_method",
    "SmsFallbackMethod": "sms_fallback_method",
}
# These route the number's calls elsewhere than its voice URL: not emulated, so refused.
ELSEWHERE = ("VoiceApplicationSid", "TrunkSid")


class InboundCallRefused(ConfigError):
    """``ring_in`` cannot place the call: no such number on the account, no voice URL
    on it, or a caller that is no phone number."""


@dataclass(eq=False)
class PhoneNumberRecord:
    sid: str
    account_sid: str
    phone_number: str  # E.164
    friendly_name: str
    date_created: datetime
    date_updated: datetime
    voice_url: str | None = None
    voice_method: str = "POST"
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"
    status_callback: str = ""
    status_callback_method: str = "POST"
    sms_url: str = ""
    sms_method: str = "POST"
    sms_fallback_url: str = ""
    sms_fallback_method: str = "POST"

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json"

    def call_params(self) -> tuple[tuple[str, str], ...]:
        """The number's voice settings under the Calls form's names, which the call's
        session reads: ``Url``, ``FallbackUrl``, ``StatusCallback`` and their methods.
        No ``StatusCallbackEvent``: a number's status callback reports the end only."""
        params = [("Url", self.voice_url or ""), ("Method", self.voice_method)]
        if self.voice_fallback_url:
            params += [("FallbackUrl", self.voice_fallback_url)]
            params += [("FallbackMethod", self.voice_fallback_method)]
        if self.status_callback:
            params += [("StatusCallback", self.status_callback)]
            params += [("StatusCallbackMethod", self.status_callback_method)]
        return tuple(params)


def number_json(number: PhoneNumberRecord) -> dict[str, object]:
    """The IncomingPhoneNumber resource (field names from twilio-python's instance)."""
    return {
        "account_sid": number.account_sid,
        "address_requirements": "none",
        "address_sid": None,
        "api_version": API_VERSION,
        "beta": False,
        "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": rfc2822(number.date_created),
        "date_updated": rfc2822(number.date_updated),
        "emergency_status": "Inactive",
        "emergency_address_sid": None,
        "emergency_address_status": "unregistered",
        "friendly_name": number.friendly_name,
        "identity_sid": None,
        "origin": "twilio",
        "phone_number": number.phone_number,
        "sid": number.sid,
        "sms_application_sid": "",
        "sms_fallback_method": number.sms_fallback_method,
        "sms_fallback_url": number.sms_fallback_url,
        "sms_method": number.sms_method,
        "sms_url": number.sms_url,
        "status_callback": number.status_callback,
        "status_callback_method": number.status_callback_method,
        "trunk_sid": None,
        "uri": number.uri,
        "voice_application_sid": "",
        "voice_caller_id_lookup": False,
        "voice_fallback_method": number.voice_fallback_method,
        "voice_fallback_url": number.voice_fallback_url,
        "voice_method": number.voice_method,
        "voice_url": number.voice_url,
        "voice_receive_mode": "voice",
        "bundle_sid": None,
        "status": "in-use",
        "type": "local",
    }


def _national(number: str) -> str:
    parsed = phonenumbers.parse(number, None)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


class NumbersApi:
    """The resource's REST handlers; ``route`` answers None for paths not its own."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    def route(self, method: str, path: str, query: str, form: Form) -> tuple[int, object] | None:
        account = self.exchange.config.account_sid
        numbers = self.exchange.numbers
        if match := COLLECTION.match(path):
            if match["account"] != account:
                raise ApiError.not_found(path)
            if method == "POST":
                return 201, number_json(self._create(form))
            if method == "GET":
                return 200, self._list(account, parse_qsl(query, keep_blank_values=True))
            raise ApiError.method_not_allowed(method)
        if match := INSTANCE.match(path):
            number = numbers.get(match["sid"])
            if match["account"] != account or number is None:
                raise ApiError.not_found(path)
            if method == "GET":
                return 200, number_json(number)
            if method == "POST":
                _apply(number, form)
                number.date_updated = utc_now()
                return 200, number_json(number)
            if method == "DELETE":  # calls it already rang go on
                del numbers[number.sid]
                return 204, None
            raise ApiError.method_not_allowed(method)
        return None

    def _list(self, account: str, query: Form) -> dict[str, object]:
        page_size = int_param(query, "PageSize", 50, 1, 1000)
        page = int_param(query, "Page", 0, 0, 1 << 30)
        filters = [(k, v) for k, v in query if k not in ("Page", "PageSize", "PageToken")]
        found = [n for n in self.exchange.numbers.values() if _matches(n, filters)]
        items = [(n.sid, number_json(n)) for n in found]
        base = f"/{API_VERSION}/Accounts/{account}/IncomingPhoneNumbers.json"
        return page_json("incoming_phone_numbers", items, base, filters, page, page_size)

    def _create(self, form: Form) -> PhoneNumberRecord:
        raw = first(form, "PhoneNumber")
        if not raw:
            if first(form, "AreaCode"):
                raise ApiError.invalid_parameter("AreaCode", "buying by area code is not emulated")
            raise ApiError.missing_phone_number()
        if raw.startswith(("client:", "sip:")) or not valid_address(raw):
            raise ApiError.invalid_phone_number(raw)
        phone_number = e164(raw)
        if self.exchange.number_for(phone_number) is not None:
            raise ApiError.number_not_available(phone_number)
        now = utc_now()
        number = PhoneNumberRecord(
            sid=new_sid("PN"),
            account_sid=self.exchange.config.account_sid,
            phone_number=phone_number,
            friendly_name=_national(phone_number),  # Twilio's default, e.g. "(808) 925-5327"
            date_created=now,
            date_updated=now,
        )
        _apply(number, form)
        self.exchange.numbers[number.sid] = number
        return number


def _apply(number: PhoneNumberRecord, form: Form) -> None:
    """Validate every field first, then set them: a bad value changes nothing."""
    for name in ELSEWHERE:
        if first(form, name):
            raise ApiError.invalid_parameter(name, "routing calls elsewhere is not emulated")
    changes: dict[str, str | None] = {}
    for name, attr in URLS.items():
        value = first(form, name)
        if value is None:
            continue
        if value and not http_url(value):
            raise ApiError.invalid_url(f"Invalid {name}: {value}")
        nullable = attr in ("voice_url", "voice_fallback_url")  # null until set
        changes[attr] = value if value or not nullable else None
    for name, attr in METHODS.items():
        if first(form, name) is not None:
            changes[attr] = method_param(form, name)
    friendly = first(form, "FriendlyName")
    if friendly is not None:
        if len(friendly) > 64:
            raise ApiError.invalid_parameter("FriendlyName", "longer than 64 characters")
        changes["friendly_name"] = friendly
    for attr, value in changes.items():
        setattr(number, attr, value)


def _matches(number: PhoneNumberRecord, filters: Form) -> bool:
    for key, value in filters:
        match key:
            case "PhoneNumber" if not _number_pattern(value).search(number.phone_number):
                return False
            case "FriendlyName" if number.friendly_name != value:
                return False
    return True


def _number_pattern(value: str) -> re.Pattern[str]:
    """The list filter: part of a number, ``*`` standing for any one digit (the SDK's
    docstring: "You can specify partial numbers and use '*' as a wildcard for any digit")."""
    return re.compile("".join(r"\d" if c == "*" else re.escape(c) for c in value))
