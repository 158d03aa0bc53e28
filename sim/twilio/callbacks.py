"""Signed webhooks: status callbacks, AMD callbacks, stream status, TwiML fetches.

Every request is form-encoded and carries ``X-Twilio-Signature`` computed the
way twilio-python's ``RequestValidator`` checks it (protocols.md 1.6, 2.5):
for POST, the URL plus the sorted form parameters; for GET, the parameters
go into the query string and the full URL is signed with no parameters.
Connection failures are retried a bounded number of times; HTTP errors are
not (Twilio does not retry a 4xx/5xx status callback either).

Status callbacks of one call go out through a ``Lane``: in order, one at a
time, or (``ordered_callbacks=False``) each as its own request at once, as the
real service sends them, so they may arrive out of order (``SequenceNumber``
is the ordering key).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import urlencode

import httpx
import phonenumbers

from .journal import Journal
from .recording import CallbackRecord, CallRecord
from .wire import API_VERSION, iso8601, rfc2822, sign, utc_now

__all__ = [
    "SIP_CODES",
    "Lane",
    "Webhooks",
    "amd_params",
    "status_params",
    "stream_status_params",
    "voice_params",
]

USER_AGENT = "TwilioProxy/1.1"
SIP_CODES = {
    "completed": "200",
    "busy": "486",
    "no-answer": "487",
    "canceled": "487",
    "failed": "500",
}


def _country(number: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return ""
    region = phonenumbers.region_code_for_number(parsed)
    if not region and parsed.country_code is not None:
        region = phonenumbers.region_code_for_country_code(parsed.country_code)
    return region or ""


def voice_params(call: CallRecord, call_status: str) -> dict[str, str]:
    """The parameters Twilio sends with every voice webhook for this call."""
    to_country, from_country = _country(call.to), _country(call.from_)
    params = {
        "AccountSid": call.account_sid,
        "ApiVersion": API_VERSION,
        "CallSid": call.sid,
        "CallStatus": call_status,
        "Called": call.to,
        "Caller": call.from_,
        "Direction": call.direction,
        "From": call.from_,
        "To": call.to,
    }
    for prefix, country in (
        ("To", to_country),
        ("Called", to_country),
        ("From", from_country),
        ("Caller", from_country),
    ):
        params[f"{prefix}Country"] = country
        params[f"{prefix}State"] = ""
        params[f"{prefix}City"] = ""
        params[f"{prefix}Zip"] = ""
    return params


def amd_params(call: CallRecord, answered_by: str, duration_ms: int) -> dict[str, str]:
    return {
        "AccountSid": call.account_sid,
        "CallSid": call.sid,
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": str(duration_ms),
    }


def stream_status_params(
    call: CallRecord, stream_sid: str, name: str, event: str, error: str | None, when: datetime
) -> dict[str, str]:
    params = {
        "AccountSid": call.account_sid,
        "CallSid": call.sid,
        "StreamSid": stream_sid,
        "StreamName": name or stream_sid,
        "StreamEvent": event,
        "Timestamp": iso8601(when),
    }
    if error is not None:
        params["StreamError"] = error
    return params


class Lane:
    """Runs submitted coroutines one after another, in submission order; or, not
    ``ordered``, each at once, as Twilio sends callbacks (they may then arrive out of
    order, and one slow answer holds up no other)."""

    def __init__(self, ordered: bool = True) -> None:
        self.ordered = ordered
        self._tail: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, job: Callable[[], Awaitable[object]]) -> None:
        previous = self._tail if self.ordered else None

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            await job()

        task = self._tail = asyncio.get_running_loop().create_task(run())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        if self._running:
            await asyncio.wait(list(self._running))


class Webhooks:
    def __init__(
        self,
        auth_token: str,
        journal: Journal,
        on_record: Callable[[CallRecord], None],
        *,
        timeout_s: float = 10.0,
        retries: int = 2,
    ) -> None:
        self._token = auth_token
        self._journal = journal
        self._on_record = on_record
        self._retries = retries
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        kind: str,
        call: CallRecord,
        url: str,
        params: dict[str, str],
        method: str = "POST",
    ) -> httpx.Response | None:
        """Send one signed webhook; record it on the call. None if it never got an answer."""
        method = "GET" if method.upper() == "GET" else "POST"
        if method == "GET":
            target = url + ("&" if "?" in url else "?") + urlencode(params)
            signature = sign(self._token, target, {})
        else:
            target, signature = url, sign(self._token, url, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": USER_AGENT}
        response: httpx.Response | None = None
        error: str | None = None
        for attempt in range(self._retries + 1):
            try:
                if method == "GET":
                    response = await self._client.get(target, headers=headers)
                else:
                    response = await self._client.post(target, data=params, headers=headers)
                error = None
                break
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                if attempt < self._retries:
                    await asyncio.sleep(0.1 * 2**attempt)
        record = CallbackRecord(
            kind=kind,
            url=url,
            method=method,
            params=dict(params),
            signature=signature,
            status_code=None if response is None else response.status_code,
            error=error,
            at=utc_now(),
        )
        call.callbacks.append(record)
        self._journal.write(
            "callback",
            call_sid=call.sid,
            callback=kind,
            method=method,
            url=url,
            params=params,
            status_code=record.status_code,
            error=error,
        )
        self._on_record(call)
        return response

    async def fetch_twiml(
        self, call: CallRecord, url: str, params: dict[str, str], method: str = "POST"
    ) -> tuple[str | None, str]:
        """Fetch a TwiML document: (text, "") or (None, why it failed)."""
        response = await self.request("twiml", call, url, params, method)
        if response is None:
            return None, "no response"
        if not 200 <= response.status_code < 300:
            return None, f"HTTP {response.status_code}"
        with contextlib.suppress(UnicodeDecodeError):
            return response.text, ""
        return None, "body is not text"


def status_params(
    call: CallRecord,
    event: str,
    call_status: str,
    sequence: int,
    when: datetime,
    duration_s: int | None,
) -> dict[str, str]:
    """One status callback's form (protocols.md 2.5)."""
    params = voice_params(call, call_status)
    params.update(
        CallbackSource="call-progress-events",
        SequenceNumber=str(sequence),
        Timestamp=rfc2822(when) or "",
    )
    if call.answered_by is not None:
        params["AnsweredBy"] = call.answered_by
    if event == "completed":
        params["SipResponseCode"] = SIP_CODES.get(call_status, "200")
        params["CallDuration"] = str(duration_s or 0)
        params["Duration"] = str(duration_s or 0)
    return params
