"""The Call resource and its list pages, as the 2010-04-01 API renders them (protocols.md 2.4).

``call_json`` is one Call (RFC 2822 dates, ``queue_time`` in ms as a string,
statuses from the resource enum only). ``list_page`` is the page shape
twilio-python's ``Page`` reads: the records under ``calls`` plus
``first_page_uri``/``next_page_uri``/``previous_page_uri``/``uri`` (relative,
filters kept), ``page``, ``page_size``, ``start`` and ``end``; newest first,
filtered by ``To``, ``From``, ``Status``, ``ParentCallSid`` and the
``StartTime``/``EndTime`` day filters.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

import phonenumbers

from .recording import CallRecord
from .wire import API_VERSION, rfc2822

__all__ = ["call_json", "list_page", "page_json"]

Form = list[tuple[str, str]]


def call_json(call: CallRecord) -> dict[str, object]:
    """The Call resource (protocols.md 2.4)."""
    base = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}"
    sub = (
        "notifications",
        "recordings",
        "payments",
        "events",
        "siprec",
        "streams",
        "transcriptions",
        "user_defined_message_subscriptions",
        "user_defined_messages",
    )
    return {
        "sid": call.sid,
        "date_created": rfc2822(call.date_created),
        "date_updated": rfc2822(call.date_updated),
        "parent_call_sid": None,
        "account_sid": call.account_sid,
        "to": call.to,
        "to_formatted": _formatted(call.to),
        "from": call.from_,
        "from_formatted": _formatted(call.from_),
        "phone_number_sid": call.phone_number_sid,  # inbound: the IncomingPhoneNumber
        "status": call.status.value,
        "start_time": rfc2822(call.start_time),
        "end_time": rfc2822(call.end_time),
        "duration": call.duration,
        "price": None,
        "price_unit": "USD",
        "direction": call.direction,
        "answered_by": call.answered_by,
        "annotation": None,
        "api_version": API_VERSION,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": str(call.queue_time_ms),
        "trunk_sid": None,
        "uri": f"{base}.json",
        "subresource_uris": {name: f"{base}/{name}.json" for name in sub},
    }


def _formatted(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


def list_page(
    calls: list[CallRecord], account: str, query: Form, page: int, page_size: int
) -> dict[str, object]:
    filters = [(k, v) for k, v in query if k not in ("Page", "PageSize", "PageToken")]
    calls = [c for c in reversed(calls) if _matches(c, filters)]
    base = f"/{API_VERSION}/Accounts/{account}/Calls.json"
    items = [(c.sid, call_json(c)) for c in calls]
    return page_json("calls", items, base, filters, page, page_size)


def page_json(
    key: str,
    items: list[tuple[str, dict[str, object]]],
    base: str,
    filters: Form,
    page: int,
    page_size: int,
) -> dict[str, object]:
    """One page of ``items`` ((sid, json), filtered and ordered) as twilio-python's
    ``Page`` reads it: the records under ``key`` and the paging fields."""
    start = page * page_size
    chunk = items[start : start + page_size]

    def uri(n: int, token: str | None = None) -> str:
        params = [*filters, ("PageSize", str(page_size)), ("Page", str(n))]
        if token:
            params.append(("PageToken", token))
        return f"{base}?{urlencode(params)}"

    has_next = start + page_size < len(items)
    return {
        key: [record for _sid, record in chunk],
        "end": start + max(len(chunk) - 1, 0),
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1, f"PA{chunk[-1][0]}") if has_next and chunk else None,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
        "start": start,
        "uri": uri(page),
    }


def _matches(call: CallRecord, filters: Form) -> bool:
    for key, value in filters:
        match key:
            case "To" if call.to != value:
                return False
            case "From" if call.from_ != value:
                return False
            case "Status" if call.status.value != value:
                return False
            case "ParentCallSid":
                return False  # API and inbound calls have no parent
            case "StartTime" | "StartTime<" | "StartTime>" | "EndTime" | "EndTime<" | "EndTime>":
                if not _date_matches(call, key, value):
                    return False
    return True


def _date_matches(call: CallRecord, key: str, value: str) -> bool:
    when = call.start_time if key.startswith("Start") else call.end_time
    try:
        wanted = date.fromisoformat(value[:10])
    except ValueError:
        return True
    if when is None:
        return False
    day = when.date()
    if key.endswith("<"):
        return day <= wanted
    if key.endswith(">"):
        return day >= wanted
    return day == wanted
