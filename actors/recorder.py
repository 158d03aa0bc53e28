"""The call recorder: one writer to the store, one source of live events.

Call actors send it batches of ``(action, unix time)`` every 500 ms (not a
Ray call per frame). It writes each action to the store as it happens, so a
dead call actor loses nothing it already reported, and appends the live
event to a bounded, sequence-numbered log that ingress replicas read with
``poll`` (a long poll: one pending Ray call per replica, not per viewer).

Ray restarts a recorder that dies (``max_restarts=-1``). Its log then starts
empty, numbered on from the microseconds since the epoch: above any number the
one before it gave out (that would take a million events a second), so a replica
polling after the last number it had gets everything the new log holds.

A batch a call actor sent as the recorder died is sent again (the call actor keeps
it until a report succeeds). Batches are numbered by their first action (``seq``,
how many of the sender's actions for the call earlier reports delivered; the sender
is one call actor serving one call), and the recorder skips what it has recorded:
from memory, or after a restart or a failed write from the store, which notes the
count with each timeline write (``switchboard.store.recorder``). So a batch sent
again adds no second timeline event. What is written again is only what came since
the last timeline write, all of it idempotent in the store; its live events may
reach viewers twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from datetime import UTC, datetime

from actors.call_metrics import NO_METRICS, TICK_S, RecorderMetrics
from switchboard.call_actions import Action, CallStatusChanged, FinishCall, ProblemNoted
from switchboard.live_events import live_event
from switchboard.store import CallStore, record_batch
from switchboard.store.status import TERMINAL_STATUSES

__all__ = ["ACTOR_FAILED", "POLL_LIMIT", "CallRecorder", "EventLog"]


POLL_LIMIT = 500  # events a poll brings at most
# A call's order lock and counts are dropped at its end, and after this long without a
# report: a call whose actor died sends no end, and a late batch (usage, a failed
# hang-up) may follow one. The counts are a cache; the store holds them too.
FORGET_AFTER_S = 600.0


class EventLog:
    """The last ``capacity`` live events, numbered consecutively, with waiting readers."""

    def __init__(self, capacity: int = 10_000, first: int = 0) -> None:
        """Events are numbered from ``first + 1``."""
        self._events: deque[tuple[int, dict[str, object]]] = deque(maxlen=capacity)
        self._last = first
        self._changed = asyncio.Condition()

    @property
    def last(self) -> int:
        return self._last

    async def append(self, event: dict[str, object]) -> None:
        await self.extend([event])

    async def extend(self, events: list[dict[str, object]]) -> None:
        if not events:
            return
        async with self._changed:
            for event in events:
                self._last += 1
                self._events.append((self._last, event))
            self._changed.notify_all()

    async def after(
        self, seq: int, timeout_s: float, limit: int = POLL_LIMIT
    ) -> tuple[list[dict[str, object]], int]:
        """Events numbered above ``seq`` (waiting up to ``timeout_s`` for one), and the
        number to ask after next. Events that fell out of the log are skipped."""
        async with self._changed:
            if self._last <= seq:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._last > seq), timeout_s
                    )
                except TimeoutError:
                    return [], seq
            # Numbers are consecutive, so the wanted events are the newest ones: read from
            # the right, not a scan of the whole log (every replica polls every 50 ms).
            wanted = min(self._last - seq, len(self._events))
            found = list(itertools.islice(reversed(self._events), wanted))[::-1][:limit]
            return [event for _, event in found], found[-1][0] if found else seq


ACTOR_FAILED = "actor_failed"  # the reason recorded for a call whose actor died


def _ends(action: Action) -> bool:
    """Whether the call is over once ``action`` is recorded: its state here can go."""
    match action:
        case FinishCall():
            return True
        case CallStatusChanged(status=status):  # a web call's status, after its end
            return status in TERMINAL_STATUSES
    return False


class CallRecorder:
    def __init__(self, database_url: str, metrics: RecorderMetrics = NO_METRICS) -> None:
        self.database_url = database_url
        self.metrics = metrics
        self.store: CallStore | None = None
        self.events = EventLog(first=time.time_ns() // 1000)  # see the module docstring
        self._opening = asyncio.Lock()
        # Ray runs an async actor's calls interleaved: one lock per call keeps its
        # batches in the order they were sent (a later batch may end the turn an
        # earlier one is still growing).
        self._calls: dict[str, asyncio.Lock] = {}
        # Per call and sender: how many of its actions are recorded (module docstring).
        self._recorded: dict[tuple[str, str], int] = {}
        self._heard: dict[str, float] = {}  # call id -> monotonic time of its last report
        self._ticker: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async with self._opening:
            if self.store is None:
                self.store = await CallStore.open(self.database_url)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self.store is not None:
            await self.store.close()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)  # a period, not a synchronisation
            self.metrics.tick(time.time())
            self.forget_quiet(time.monotonic())

    def forget_quiet(self, now: float) -> None:
        """Drop what is kept for calls not heard from for ``FORGET_AFTER_S``."""
        for call_id, heard in list(self._heard.items()):
            lock = self._calls.get(call_id)
            if now - heard >= FORGET_AFTER_S and not (lock and lock.locked()):
                self._forget(call_id)

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self._heard.pop(call_id, None)
        for ended in [k for k in self._recorded if k[0] == call_id]:
            del self._recorded[ended]

    async def report(
        self,
        call_id: str,
        batch: list[tuple[Action, float]],
        seq: int | None = None,
        sender: str = "",
    ) -> None:
        """Record and publish a call's ``(action, unix time)`` pairs. ``seq`` numbers the
        first of them among ``sender``'s; ``None`` for actions not numbered, which are
        all recorded."""
        received = time.time()
        await self.open()
        async with self._call_lock(call_id):
            await self._record(call_id, batch, seq, sender, received)
        if any(_ends(action) for action, _ in batch):
            self._forget(call_id)

    def _call_lock(self, call_id: str) -> asyncio.Lock:
        self._heard[call_id] = time.monotonic()
        return self._calls.setdefault(call_id, asyncio.Lock())

    async def _record(
        self,
        call_id: str,
        batch: list[tuple[Action, float]],
        seq: int | None,
        sender: str,
        received: float,
        over: bool = False,
    ) -> None:
        """``report``'s work, under the call's lock; ``over``: the call had ended before."""
        assert self.store is not None
        if not sender:  # numbers mean nothing without whose they are: record it all
            seq = None
        key = (call_id, sender)
        fresh, progress, done = batch, None, 0
        if seq is not None:
            done = self._recorded.get(key, -1)
            if done < 0:  # its first since this recorder started: ask the store
                done = await self.store.actions_recorded(call_id, sender)
                # Its end recorded before this recorder started: no live call in the metrics.
                over = over or (done > 0 and await self.store.finish_reason(call_id) is not None)
            fresh, progress = batch[max(0, done - seq) :], (sender, seq + len(batch))
        timed = [(action, datetime.fromtimestamp(at, UTC)) for action, at in fresh]
        try:
            written = await record_batch(self.store, call_id, timed, progress)
        except BaseException:
            # It may have committed all the same (its answer lost): ask the store next time.
            self._recorded.pop(key, None)
            raise
        if progress is not None:
            self._recorded[key] = max(progress[1], self._recorded.get(key, 0))
        # Counted once recorded: a batch that failed is sent again.
        self.metrics.reported(call_id, fresh, received, not seq and not done, over)
        if len(written) < len(timed):  # an end after the call's end: not one to show
            fresh = [(action, at) for action, at in fresh if type(action) is not FinishCall]
        events = [live_event(call_id, action, at) for action, at in fresh]
        await self.events.extend([event for event in events if event is not None])

    async def actor_died(self, call_id: str, cause: str, at: float) -> None:
        """The pool's word that the call's actor died (``cause``, at unix time ``at``): the
        call ended with it, unless it had ended before, the actor dying in its wrap-up
        (then its last reports may be lost, but the end it reported stands). A reply it
        was speaking is cut there, nothing known heard (``record_batch`` closes it)."""
        received = time.time()
        await self.open()
        assert self.store is not None
        async with self._call_lock(call_id):  # after any report of the actor's in hand
            ended = await self.store.finish_reason(call_id)
            batch: list[tuple[Action, float]]
            if ended is None:
                message = f"the call's actor died ({cause}); the call ended with it"
                died = ProblemNoted("switchboard", ACTOR_FAILED, message, fatal=True)
                batch = [(died, at), (FinishCall(ACTOR_FAILED), at)]
            else:
                message = (
                    f"the call's actor died ({cause}) after the call ended ({ended}),"
                    " in its wrap-up"
                )
                batch = [(ProblemNoted("switchboard", ACTOR_FAILED, message), at)]
            await self._record(call_id, batch, None, "", received, over=ended is not None)
        self._forget(call_id)

    async def publish(self, event: dict[str, object]) -> None:
        """An event from the ingress (call created, status callback...)."""
        await self.events.append(event)

    async def last_seq(self) -> int:
        """Where a new reader should start: only events from now on."""
        return self.events.last

    async def poll(
        self, after: int, timeout_s: float = 15.0
    ) -> tuple[list[dict[str, object]], int]:
        return await self.events.after(after, timeout_s)
