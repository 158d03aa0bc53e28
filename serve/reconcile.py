"""Calls the store still holds as live that nothing serves any more, settled.

A call's end reaches the store through its actor or Twilio's status callback.
Either can be lost: the server stopped mid-call (``make run`` interrupted), a
callback came while no ingress was up, an actor died with its call. Such a
call would read ``in-progress`` forever and could not even be hung up. So each
ingress replica looks, every ``EVERY_S``, at the calls not ended that were
created over ``SETTLE_AFTER_S`` ago (placing one takes seconds) and that no call
actor serves, and records how they ended:

- what Twilio says, when Twilio has the call and it is over there (the status
  its lost callback would have carried);
- ``failed`` when Twilio does not have it (a web call, one never dialed, one an
  emulator restarted without), with a ``problem`` saying why;
- a call Twilio still has up, with no actor on our side, is left one round (its
  callback may be on its way), then hung up at Twilio and recorded ``failed``.

A call whose timeline moved within ``quiet_s`` is left alone even when no actor
of ours serves it: a live call's record moves at least every couple of caller
silences (the policy nudges, then hangs up), and during an upgrade on
Kubernetes two clusters share the database, each serving calls the other's
pool does not know (``docker/README.md``, "Upgrades and long calls").

The timeline's times are stamped by the nodes that recorded them: a node whose clock
runs ahead would keep its calls "moving" for as long as it is ahead. So a call whose
newest event is stamped in the future is also quiet once no event has been added to
its timeline for ``quiet_s`` of this replica's own clock.

Replicas may settle the same call at once: a terminal status is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from serve.call_journal import utc_now
from serve.ports import AppDeps
from switchboard.errors import SwitchboardError
from switchboard.store import CallRecord
from switchboard.store.status import STATUSES, is_terminal

__all__ = ["Reconciler"]

log = logging.getLogger("switchboard.serve")
EVERY_S = 60.0
SETTLE_AFTER_S = 300.0  # older than any placing (its Twilio create retries included)
QUIET_S = 180.0  # at least; and over two caller silences (the nudge, then the hang-up)
PAGE = 200
HANG_UP_TRIES = 10  # one a round
NOT_ENDED = tuple(s for s in sorted(STATUSES) if not is_terminal(s))


class Reconciler:
    def __init__(
        self,
        deps: AppDeps,
        *,
        every_s: float = EVERY_S,
        settle_after_s: float = SETTLE_AFTER_S,
        quiet_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.deps = deps
        self.every_s = every_s
        self.settle_after = timedelta(seconds=settle_after_s)
        if quiet_s is None:
            quiet_s = max(QUIET_S, 2 * deps.settings.caller_silence_timeout_s + 60)
        self.quiet = timedelta(seconds=quiet_s)
        self.clock = clock
        self._still_up: set[str] = set()  # up at Twilio with no actor, seen last round
        # Settled as failed, not yet hung up at Twilio (its answer was an error): tried
        # again each round, up to HANG_UP_TRIES times.
        self._to_end: dict[str, tuple[CallRecord, int]] = {}
        # Per call looked at: the id of its last event written, and when this replica first
        # read it.
        self._newest: dict[str, tuple[int, datetime]] = {}
        self._looked_at: set[str] = set()  # this round's: the others are forgotten
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                settled = await self.once()
                if settled:
                    log.warning("settled %d calls that had no call actor left", settled)
            except SwitchboardError as exc:  # the store or Twilio away: next round
                log.warning("settling calls without an actor failed: %s", exc)
            except Exception:
                log.exception("settling calls without an actor failed")
            await asyncio.sleep(self.every_s)  # a period between rounds, not synchronisation

    async def once(self) -> int:
        """One round; how many calls it settled."""
        before = self.clock() - self.settle_after
        settled = 0
        up: set[str] = set()
        for call, tries in list(self._to_end.values()):
            await self._end_at_carrier(call, tries)
        try:
            for status in NOT_ENDED:
                cursor: str | None = None
                while True:
                    page = await self.deps.store.list_calls(
                        status=status, created_before=before, limit=PAGE, cursor=cursor
                    )
                    for call in page.calls:
                        try:
                            outcome = await self._settle(call)
                        except SwitchboardError as exc:  # this call next round; the rest now
                            log.warning("settling call %s failed: %s", call.id, exc)
                            continue
                        settled += outcome is True
                        if outcome is None:
                            up.add(call.id)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        finally:
            self._still_up = up
            self._newest = {k: v for k, v in self._newest.items() if k in self._looked_at}
            self._looked_at = set()
        return settled

    def _quiet(self, call_id: str, newest: datetime, written_last: int) -> bool:
        """Whether the call's record has not moved for ``quiet``: by its newest event's
        time, or, should that be ahead (a node's clock), by how long no event has been
        added (the id of the last one written stayed the same)."""
        now = self.clock()
        self._looked_at.add(call_id)
        seen = self._newest.get(call_id)
        if seen is None or seen[0] != written_last:
            seen = self._newest[call_id] = (written_last, now)
        return now - newest >= self.quiet or (newest > now and now - seen[1] >= self.quiet)

    async def _settle(self, call: CallRecord) -> bool | None:
        """True when settled now, None when left up at Twilio for a round, else False."""
        control = self.deps.control
        if await control.is_live(call.id) is not False:  # served, or cannot be told now
            return False
        last = await self.deps.store.last_event(call.id)
        if last is not None and not self._quiet(call.id, *last):
            return False  # its record moves: an actor serves it, if not one of ours
        status = await control.carrier_status(call)
        if status is not None and is_terminal(status):
            await self._record(call, status)
            return True
        if status is not None and call.id not in self._still_up:
            return None  # its callback may be on its way
        if status is not None:
            reason = f"Twilio still had the call {status} with no call actor: hung up"
        else:
            reason = "no call actor serves it and Twilio has no record of it"
        # The status first: of several replicas settling at once, only the one whose
        # write applied hangs up and notes the problem.
        at = self.clock()
        if not await self.deps.store.update_status(call.id, "failed", at, {"reason": reason}):
            return False
        if status is not None:
            await self._end_at_carrier(call, 0)
        problem = {"source": "settling", "reason": "abandoned", "message": reason, "fatal": True}
        self.deps.control.noted("settling", "abandoned", True)
        await self.deps.store.append_event(call.id, "problem", at, problem)
        self.deps.events.publish(
            call.id,
            {"type": "call.status", "at": at, "status": "failed", "applied": True} | problem,
        )
        log.warning("call %s settled as failed: %s", call.id, reason)
        return True

    async def _end_at_carrier(self, call: CallRecord, tries: int) -> None:
        """Hang the call up at Twilio; on an error, again next round (its status already
        says failed, so the listing would not bring it back)."""
        self._to_end.pop(call.id, None)
        try:
            await self.deps.control.end_at_carrier(call)
        except SwitchboardError as exc:
            if tries + 1 < HANG_UP_TRIES:
                self._to_end[call.id] = (call, tries + 1)
                log.warning("hanging up call %s at Twilio failed, again later: %s", call.id, exc)
            else:
                log.error("call %s may still be up at Twilio: hanging up failed: %s", call.id, exc)

    async def _record(self, call: CallRecord, status: str) -> None:
        at = self.clock()
        detail: dict[str, object] = {"source": "settled", "reason": "no callback reached us"}
        applied = await self.deps.store.update_status(call.id, status, at, detail)
        if applied:
            self.deps.events.publish(
                call.id, {"type": "call.status", "at": at, "status": status, "applied": True}
            )
