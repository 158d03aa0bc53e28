"""A warm pool of ready call actors, and the directory of live calls.

Creating a Ray actor costs 0.3 s here, seconds in a burst (ray-notes.md), far
too long to wait for once the callee can answer. The pool keeps ``size``
actors started (process up, media server listening) and hands one out per
call; it refills in the background. It also answers the media edge's one
question, "where does this call's stream go?", and retires each actor when
its call is over (detached actors need explicit cleanup).

The pool is an ordinary class over a ``SlotFactory`` port: the Ray wiring
(``actors/ray_wiring.py``) makes it a singleton detached actor and the slots
Ray actors; tests use plain objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

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

    def finished(self, slot: Slot[H]) -> Awaitable[str]:
        """Resolves, with the reason, when the slot's call is over."""

    async def retire(self, slot: Slot[H]) -> None:
        """Stop the actor for good."""


class CallPool(Generic[H]):
    def __init__(self, factory: SlotFactory[H], size: int = 2) -> None:
        self.factory = factory
        self.size = size
        self._ready: asyncio.Queue[Slot[H]] = asyncio.Queue()
        self._live: dict[str, Slot[H]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = 0
        self.ended: dict[str, str] = {}  # call id -> reason, for the calls this pool served

    @property
    def ready(self) -> int:
        return self._ready.qsize()

    @property
    def live(self) -> int:
        return len(self._live)

    async def fill(self) -> None:
        """Start actors until ``size`` are ready; returns when they are."""
        count = self._missing()
        self._starting += count  # counted now, so a concurrent fill does not overshoot
        await asyncio.gather(*(self._start_one() for _ in range(count)))

    async def acquire(self, call_id: str) -> Slot[H]:
        """A ready actor for ``call_id`` (started now if the pool ran dry)."""
        slot = self._ready.get_nowait() if not self._ready.empty() else None
        if slot is None:
            slot = await self.factory.create()
        self._live[call_id] = slot
        self._spawn(self._watch(call_id, slot))
        self._spawn(self.fill())
        return slot

    def locate(self, call_id: str) -> tuple[str, int] | None:
        slot = self._live.get(call_id)
        return None if slot is None else slot.media_address

    def slot(self, call_id: str) -> Slot[H] | None:
        return self._live.get(call_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        slots = list(self._live.values())
        while not self._ready.empty():
            slots.append(self._ready.get_nowait())
        await asyncio.gather(*(self.factory.retire(s) for s in slots), return_exceptions=True)
        self._live.clear()

    def _missing(self) -> int:
        return max(0, self.size - self._ready.qsize() - self._starting)

    async def _start_one(self) -> None:
        try:
            self._ready.put_nowait(await self.factory.create())
        finally:
            self._starting -= 1

    async def _watch(self, call_id: str, slot: Slot[H]) -> None:
        try:
            self.ended[call_id] = await self.factory.finished(slot)
        except Exception as exc:  # the actor died: the call is over all the same
            log.warning("call actor %s failed: %s", slot.name, exc)
            self.ended[call_id] = "actor_failed"
        finally:
            self._live.pop(call_id, None)
            with contextlib.suppress(Exception):
                await self.factory.retire(slot)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
