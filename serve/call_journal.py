"""What the ingress itself writes about a call: the store record and the live event.

The call actors record the conversation (``switchboard.store.record``); the
ingress records what happens at its edge: a call created, a status callback,
an AMD result, a hang-up request, and a call that could not be placed. Each
writes the store first, then publishes the matching live event, so a
subscriber that sees an event can read it back from ``GET /calls/{id}``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from serve.ports import AppDeps
from switchboard.errors import SwitchboardError
from switchboard.store import CallRecord

__all__ = ["error_code", "publish_created", "record_canceled", "record_failure", "utc_now"]

log = logging.getLogger("switchboard.serve")


def utc_now() -> datetime:
    return datetime.now(UTC)


def error_code(exc: BaseException) -> int | None:
    """The remote service's error code (Twilio's, e.g. 21211) when the error carries one."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def publish_created(deps: AppDeps, call: CallRecord) -> None:
    deps.events.publish(
        call.id,
        {
            "type": "call.created",
            "at": call.created_at,
            "direction": call.direction,
            "to": call.to,
            "from": call.from_,
            "status": call.status,
        },
    )


async def record_failure(deps: AppDeps, call_id: str, stage: str, exc: BaseException) -> None:
    """Mark the call failed (status + a ``problem`` timeline event) and tell subscribers.

    Never raises: it runs while another error is being answered, and a store
    that is down must not hide that error.
    """
    at = utc_now()
    cause = type(exc).__name__
    message = str(exc) or cause
    code = error_code(exc)
    problem: dict[str, object] = {
        "source": stage,
        "reason": cause,
        "message": message,
        "fatal": True,
    } | ({"code": code} if code is not None else {})
    log.warning("call %s failed while %s: %s: %s", call_id, stage, cause, message)
    applied = False  # as the store has it: a call that ended already stays as it ended
    try:
        applied = await deps.store.update_status(call_id, "failed", at, {"reason": cause})
        await deps.store.append_event(call_id, "problem", at, problem)
    except SwitchboardError as store_exc:
        log.error("call %s: could not record the failure: %s", call_id, store_exc)
    deps.events.publish(
        call_id,
        {"type": "call.status", "at": at, "status": "failed", "applied": applied} | problem,
    )


async def record_canceled(deps: AppDeps, call_id: str, exc: BaseException) -> None:
    """The call was hung up before it was dialed: ``canceled``, as Twilio would have it for
    a call ended before its answer. Never raises (as ``record_failure``)."""
    at = utc_now()
    log.info("call %s: %s", call_id, exc)
    applied = False
    try:
        applied = await deps.store.update_status(call_id, "canceled", at, {"by": "api"})
    except SwitchboardError as store_exc:
        log.error("call %s: could not record its cancelation: %s", call_id, store_exc)
    deps.events.publish(
        call_id, {"type": "call.status", "at": at, "status": "canceled", "applied": applied}
    )
