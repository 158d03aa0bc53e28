"""Twilio's REST API from async code: the sync SDK in a worker thread, throttling retried.

A 429 (error 20429, too many concurrent requests) "is never processed and is always
safe to retry", and the SDK's sync client does not retry it (protocols.md 2.7, 2.8):
so placing or ending a call under load would fail where waiting a moment succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

__all__ = ["ATTEMPTS", "end_call", "twilio_call"]

P = ParamSpec("P")
T = TypeVar("T")
ATTEMPTS = 5  # the last wait is about 2 s; the whole, at most about 4 s
FIRST_WAIT_S = 0.25
NOT_MODIFIABLE = 21220  # "Call is not in-progress": over, or the update fits not its state
NOT_ANSWERED = frozenset({"queued", "ringing"})
ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def _throttled(exc: BaseException) -> bool:
    return isinstance(exc, TwilioRestException) and exc.status == 429


async def twilio_call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a thread; on a 429 again, up to ``ATTEMPTS`` tries with
    jittered exponential waits (many calls throttled at once do not retry in step)."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_throttled),
        wait=wait_random_exponential(multiplier=FIRST_WAIT_S, max=4.0),
        stop=stop_after_attempt(ATTEMPTS),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await asyncio.to_thread(fn, *args, **kwargs)
    raise AssertionError("tenacity ends with a result or the last error")  # pragma: no cover


async def end_call(client: Client, call_sid: str, status: str | None = None) -> bool:
    """End the call Twilio has as ``call_sid``: ``canceled`` while it is queued or ringing,
    ``completed`` once answered (protocols.md 2.3); ``status``, if known, picks the first
    try. False when it was over already: a hang-up races the call's end (closing its
    media socket ends it too), and Twilio refuses to end what has ended (21220)."""
    end = "canceled" if status in NOT_ANSWERED else "completed"
    for _ in range(3):  # the call may move on between a refusal and the next try
        canceled = False
        try:
            await twilio_call(client.calls(call_sid).update, status=end)
            if end == "completed":
                return True
            # `canceled` is taken, and does nothing, once the call is answered (2.3).
            canceled = True
        except TwilioRestException as exc:
            if exc.status == 404:
                return False
            if exc.code != NOT_MODIFIABLE:
                raise
        try:
            now = str((await twilio_call(client.calls(call_sid).fetch)).status)
        except TwilioRestException as exc:
            if exc.status == 404:
                return False
            raise
        if now in ENDED:
            return canceled and now == "canceled"  # ended by this cancel, or over before
        end = "canceled" if now in NOT_ANSWERED else "completed"
    await twilio_call(client.calls(call_sid).update, status=end)  # its error, if any, stands
    return True
