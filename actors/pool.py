"""A warm pool of ready call actors, and the directory of live calls.

Creating a Ray actor costs 0.3 s here, seconds in a burst (ray-notes.md), far
too long to wait for once the callee can answer. The pool keeps ``size``
actors started (process up, media server listening) and hands one out per
call; it refills in the background. It also answers the media edge's one
question, "where does this call's stream go?". When a call is over its actor
goes back among the ready ones, up to twice ``size`` of them (each a process
start saved: about a second of CPU here), else it is retired (detached actors
need explicit cleanup); an actor is retired anyway after a number of calls.

Refills never ask for more actors than the cluster can place: an actor that
waits for a ``call_slot`` makes every raylet's deadlock check run
``gc.collect()`` in every worker each 10 s, stalling all live calls. So a
refill starts at most ``factory.free_slots()`` minus the creations already
in flight (some of which may already hold their slot: counting them twice
errs on the side of starting fewer). When the pool is short of room it
looks again every ``recheck_s`` (slots are released a little after an actor
is killed, and nodes may join); when a creation fails it waits ``backoff``
seconds, doubling up to ``backoff_max``, before trying again.

A ready actor can die while it waits (its node lost, killed, out of memory): with a
``lost`` check (one round trip to the actor) the pool asks each before handing it out,
retires the dead ones and takes the next, else starts one. A dead one handed out would
fail its call's placing, though live ones were ready, and be recorded as a call's
actor dying. (Between the check and the call's first use the actor can still die:
that is a call's actor dying.)

A call whose actor dies is handed to ``on_failed`` (the Ray wiring records it: the
actor can no longer say how its call ended) once its slot is retired.

A pool started again after a crash ``adopt``s the call actors the one before it
left: the ready ones join the ready, and each live call is watched again (its
actor's ``finished`` answers every caller), so it is recycled or retired as usual.

The pool is an ordinary class over a ``SlotFactory`` port: the Ray wiring
(``actors/ray_wiring.py``) makes it a singleton detached actor and the slots
Ray actors; tests use plain objects and a fake ``sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from switchboard.errors import CallCanceled

__all__ = ["CallPool", "Slot", "SlotFactory"]

log = logging.getLogger(__name__)
H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class Slot(Generic[H]):
    name: str
    handle: H
    media_address: tuple[str, int]


class SlotFactory(Protocol[H]):
    async def create(self) -> Slot[H]:
        """Start one call actor and its media server."""

    async def free_slots(self) -> int:
        """How many more call actors the cluster could place now (creations in flight may count)."""

    def finished(self, slot: Slot[H]) -> Awaitable[str]:
        """Resolves, with the reason, when the slot's call is over."""

    async def recycle(self, slot: Slot[H]) -> Slot[H] | None:
        """After ``finished``: the same actor ready for another call, or None (retire it)."""

    async def retire(self, slot: Slot[H]) -> None:
        """Stop the actor for good (its slot is released, possibly a little later)."""


class CallPool(Generic[H]):
    def __init__(
        self,
        factory: SlotFactory[H],
        size: int = 2,
        *,
        recheck_s: float = 0.5,
        create_timeout_s: float = 60.0,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_failed: Callable[[str, Exception], Awaitable[None]] | None = None,
        lost: Callable[[Slot[H]], Awaitable[bool]] | None = None,
    ) -> None:
        self.factory = factory
        self.size = size
        self.recheck_s = recheck_s
        self.create_timeout_s = create_timeout_s
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._on_failed = on_failed
        self._lost = lost  # whether a ready actor is gone for good; None: none are checked
        self._ready: deque[Slot[H]] = deque()
        self._live: dict[str, Slot[H]] = {}
        self._checking: dict[str, Slot[H]] = {}  # ready ones taken out to be checked
        # Calls waiting for an actor started for them: one creation per call, however
        # often it is asked for (a retried webhook), registered by the creation itself.
        self._acquiring: dict[str, asyncio.Task[Slot[H]]] = {}
        self._canceled: set[str] = set()  # hung up before their actor was handed out
        self._tasks: set[asyncio.Task[None]] = set()  # refills: short-lived
        self._watchers: set[asyncio.Task[None]] = set()  # one per live call
        self._starting = 0  # refill creations in flight: they count toward ``size``
        self._on_demand = 0  # creations for a call that found the pool dry
        self._recycling = 0  # finished calls' actors being made ready again
        self._launched = 0  # creations ever begun: tells a refill what started while it asked
        self._failures = 0  # consecutive failed creations; sets the back-off
        self._timer: asyncio.Task[None] | None = None  # the one scheduled re-check
        self._holding = False  # backing off after a failure: refills wait for the timer
        self._closed = False
        self.recycled = 0  # finished calls' actors put back among the ready ones

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def starting(self) -> int:
        return self._starting + self._on_demand

    async def fill(self) -> None:
        """Start actors until ``size`` are ready or the cluster has no room; returns when
        they are up, raising the first creation error (the pool retries on its own)."""
        count = await self._claim()
        results = await asyncio.gather(*(self._start_one() for _ in range(count)))
        for error in results:
            if error is not None:
                raise error

    async def acquire(self, call_id: str) -> Slot[H]:
        """A ready actor for ``call_id`` (started now if the pool ran dry); the one it has
        if asked again (a retried webhook), so a call never holds two."""
        held = self._live.get(call_id)
        if held is not None:
            return held
        creating = self._acquiring.get(call_id)
        if creating is None:
            if call_id in self._canceled:  # hung up before it asked (or asked a crashed pool)
                self._canceled.discard(call_id)
                raise _canceled(call_id)
            if self._ready and self._lost is None:
                return self._hand_out(call_id, self._ready.popleft())
            creating = asyncio.ensure_future(self._serve(call_id))
            creating.add_done_callback(_retrieved)
            self._acquiring[call_id] = creating
        # Shielded: a caller that gives up does not stop the creation, which hands the
        # actor to the call itself (else a started actor would be owned by nobody).
        return await asyncio.shield(creating)

    async def _serve(self, call_id: str) -> Slot[H]:
        """A ready actor found alive for ``call_id``, else one started for it."""
        try:
            slot = await self._take_ready()
        except BaseException:  # the pool closes
            self._acquiring.pop(call_id, None)
            raise
        if slot is None:  # (hung up meanwhile: refused once its actor is up, as ever)
            return await self._start_for(call_id)
        self._acquiring.pop(call_id, None)
        if call_id in self._canceled:
            self._canceled.discard(call_id)
            self._ready.appendleft(slot)  # unused: the next call's
            raise _canceled(call_id)
        return self._hand_out(call_id, slot)

    async def _take_ready(self) -> Slot[H] | None:
        """The first ready actor still alive, None if none is; the dead are retired."""
        while self._ready:
            slot = self._ready.popleft()
            if self._lost is None:
                return slot
            self._checking[slot.name] = slot
            try:
                gone = await self._lost(slot)
            except Exception as exc:  # cannot tell: the placing will
                log.warning("checking ready call actor %s failed: %s", slot.name, exc)
                gone = False
            except BaseException:  # the pool closes: it retires the ready ones
                self._ready.appendleft(slot)
                raise
            finally:
                self._checking.pop(slot.name, None)
            if not gone:
                return slot
            # Never handed out: no call to record its death against.
            log.warning("ready call actor %s is gone: retired", slot.name)
            self._spawn(self._retire_lost(slot))
        return None

    async def _retire_lost(self, slot: Slot[H]) -> None:
        with contextlib.suppress(Exception):  # dead already: its slot is (or will be) free
            await self.factory.retire(slot)
        await self._refill()

    async def _start_for(self, call_id: str) -> Slot[H]:
        self._on_demand += 1
        self._launched += 1
        try:
            # Bounded: a full cluster would hold the call's placing (and its record,
            # "queued") for as long as it stays full.
            slot = await asyncio.wait_for(self.factory.create(), self.create_timeout_s)
        except Exception as exc:
            if call_id in self._canceled:  # hung up meanwhile: that is how it ended
                raise _canceled(call_id) from exc
            raise
        finally:
            self._on_demand -= 1
            self._acquiring.pop(call_id, None)
            canceled = call_id in self._canceled
            self._canceled.discard(call_id)
        if canceled:
            self._ready.append(slot)  # unused: the next call's
            raise _canceled(call_id)
        return self._hand_out(call_id, slot)

    def cancel(self, call_id: str, placing: bool = False) -> bool:
        """Hang up a call whose actor is still being started: the actor goes to the next
        call instead. ``placing``: the call's record says it is being placed, so a call
        not asked for yet (its ``acquire`` on its way, or to be retried on a pool started
        after a crash) is refused when it asks. False if the call has its actor, or is
        neither waiting for one nor being placed."""
        if call_id in self._live:  # hung up at its actor
            return False
        if not (placing or call_id in self._acquiring or call_id in self._canceled):
            return False
        self._canceled.add(call_id)
        return True

    def restore_canceled(self, call_ids: Iterable[str]) -> None:
        """Calls a crashed pool before this one was told to cancel while their actors
        were starting: asked for again (the placing retries), each is refused."""
        self._canceled.update(call_ids)

    def _hand_out(self, call_id: str, slot: Slot[H]) -> Slot[H]:
        self._live[call_id] = slot
        self._spawn(self._watch(call_id, slot), self._watchers)
        self._spawn(self._refill())
        return slot

    def known_names(self) -> set[str]:
        """Every actor this pool holds, ready (or being checked) or live."""
        held = [*self._ready, *self._checking.values(), *self._live.values()]
        return {s.name for s in held}

    def adopt(self, ready: Iterable[Slot[H]], live: Mapping[str, Slot[H]]) -> None:
        """Take over actors a pool before this one started: ``ready`` ones, and ``live``
        ones by call id, watched from now on like any call this pool handed out."""
        self._ready.extend(ready)
        for call_id, slot in live.items():
            self._live[call_id] = slot
            self._spawn(self._watch(call_id, slot), self._watchers)

    def ready_names(self) -> list[str]:
        """The ready actors, next to be handed out first."""
        return [slot.name for slot in self._ready]

    def locate(self, call_id: str) -> tuple[str, int] | None:
        slot = self._live.get(call_id)
        return None if slot is None else slot.media_address

    def slot(self, call_id: str) -> Slot[H] | None:
        return self._live.get(call_id)

    def serves(self, call_id: str) -> bool:
        """Whether the call has an actor, or is waiting for one started for it."""
        return call_id in self._live or call_id in self._acquiring

    async def close(self) -> None:
        self._closed = True
        tasks = [
            *self._tasks,
            *self._watchers,
            *self._acquiring.values(),
            *([self._timer] if self._timer else []),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        slots = list(self._live.values())
        slots.extend(self._ready)
        self._ready.clear()
        await asyncio.gather(*(self.factory.retire(s) for s in slots), return_exceptions=True)
        self._live.clear()

    def _missing(self) -> int:
        return max(0, self.size - len(self._ready) - self._starting)

    async def _claim(self) -> int:
        """Reserve the refill creations that are missing and that the cluster can place."""
        if self._closed or self._holding or not self._missing():
            return 0
        in_flight, launched = self.starting, self._launched
        try:
            free = await self.factory.free_slots()
        except Exception as exc:
            log.warning("cannot read the free call slots: %s", exc)
            self._back_off()
            return 0
        # Creations begun while we asked may not show in ``free`` yet: count them too.
        busy = in_flight + self._launched - launched
        count = max(0, min(self._missing(), free - busy))
        if count < self._missing():
            self._recheck_later(self.recheck_s)
        self._starting += count
        self._launched += count
        return count

    async def _refill(self) -> None:
        count = await self._claim()
        await asyncio.gather(*(self._start_one() for _ in range(count)))

    async def _start_one(self) -> Exception | None:
        try:
            slot = await self.factory.create()
        except Exception as exc:
            log.warning("starting a call actor failed: %s", exc)
            self._starting -= 1
            self._back_off()
            return exc
        self._starting -= 1
        self._failures = 0
        self._ready.append(slot)
        # ``_claim`` may have counted this creation twice; now it is known, look again.
        self._spawn(self._refill())
        return None

    def _back_off(self) -> None:
        if self._holding:  # one round of creations failed: count it once
            return
        self._failures += 1
        delay = min(self.backoff_max, self.backoff * 2 ** (self._failures - 1))
        self._holding = True
        if self._timer is not None:  # a short re-check would end the back-off early
            self._timer.cancel()
            self._timer = None
        self._recheck_later(delay)

    def _recheck_later(self, delay: float) -> None:
        if self._timer is None and not self._closed:
            self._timer = asyncio.ensure_future(self._recheck(delay))

    async def _recheck(self, delay: float) -> None:
        await self._sleep(delay)
        self._timer = None
        self._holding = False
        self._spawn(self._refill())

    async def _watch(self, call_id: str, slot: Slot[H]) -> None:
        # The slot stays in ``_live`` until recycled or retired: should the pool close
        # meanwhile (cancelling this task), ``close`` retires it.
        failure: Exception | None = None
        try:
            await self.factory.finished(slot)
        except Exception as exc:  # the actor died: the call is over all the same
            log.warning("call actor %s failed: %s", slot.name, exc)
            failure = exc
        if failure is not None or not await self._recycled(slot):
            with contextlib.suppress(Exception):
                await self.factory.retire(slot)
            self._spawn(self._refill())  # its slot is free again (or soon: see recheck_s)
        self._live.pop(call_id, None)
        if failure is not None and self._on_failed is not None:
            try:
                await self._on_failed(call_id, failure)
            except Exception as exc:
                log.error("call %s: recording that its actor died failed: %s", call_id, exc)

    async def _recycled(self, slot: Slot[H]) -> bool:
        """Put a finished call's actor back among the ready ones, up to twice ``size``.

        A call's start refills the pool at once (the next call cannot wait for one to
        end), so without the headroom every call would still cost a process start."""
        if self._closed or len(self._ready) + self._starting + self._recycling >= 2 * self.size:
            return False
        self._recycling += 1  # calls ending together must not all pass the check above
        try:
            fresh = await self.factory.recycle(slot)
        except Exception as exc:
            log.warning("recycling call actor %s failed: %s", slot.name, exc)
            return False
        finally:
            self._recycling -= 1
        if fresh is None or self._closed:
            return False
        self._ready.append(fresh)
        self.recycled += 1
        return True

    def _spawn(
        self, coro: Coroutine[Any, Any, None], into: set[asyncio.Task[None]] | None = None
    ) -> None:
        if self._closed:
            coro.close()
            return
        tasks = self._tasks if into is None else into
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a creation's failure seen: its callers may all have gone."""
    if not task.cancelled():
        task.exception()


def _canceled(call_id: str) -> CallCanceled:
    return CallCanceled(f"call {call_id} was hung up before an actor could take it")
