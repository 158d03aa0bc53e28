"""The warm pool over a fake slot factory: no Ray, no sleeps."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import pytest

from actors.pool import CallPool, Slot
from switchboard.errors import CallCanceled


class FakeFactory:
    """Places actors like Ray does: each holds one of ``capacity`` slots until retired.

    An actor takes its slot when placed, which is when its creation is let
    through ``gate`` (at once without one); until then ``free_slots`` does not
    count it, as Ray's ``available_resources`` does not. A placement beyond
    capacity is recorded in ``unplaceable`` (Ray would leave that actor pending:
    the bug under test) and still succeeds. ``lagging`` keeps a retired actor's
    slot taken until ``release()``, as Ray does for ~70 ms.
    """

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.held = 0
        self.created = 0
        self.unplaceable = 0
        self.retired: list[str] = []
        self.endings: dict[str, asyncio.Future[str]] = {}
        self.failing: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set, creations wait for it
        self.asked: asyncio.Event | None = None  # when set, free_slots waits for it
        self.lagging = False
        self.unreleased = 0
        self.asking = 0
        self.recyclable: bool | Exception = False
        self.recycled: list[str] = []
        self.dead: set[str] = set()  # ready actors that died while they waited
        self.checked: list[str] = []  # ready actors asked whether they are ``lost``
        self.checks: asyncio.Event | None = None  # when set, a check waits for it
        self.check_error: Exception | None = None

    async def create(self) -> Slot[str]:
        if self.failing is not None:
            raise self.failing
        self.created += 1
        number = self.created
        if self.gate is not None:
            await self.gate.wait()
        if self.held >= self.capacity:
            self.unplaceable += 1
        self.held += 1
        name = f"slot-{number}"
        self.endings[name] = asyncio.get_running_loop().create_future()
        return Slot(name, f"handle-{number}", ("127.0.0.1", 40000 + number))

    async def free_slots(self) -> int:
        free = self.capacity - self.held
        self.asking += 1
        if self.asked is not None:
            await self.asked.wait()
        return free

    async def lost(self, slot: Slot[str]) -> bool:
        self.checked.append(slot.name)
        if self.checks is not None:
            await self.checks.wait()
        if self.check_error is not None:
            raise self.check_error
        return slot.name in self.dead

    def finished(self, slot: Slot[str]) -> asyncio.Future[str]:
        return self.endings[slot.name]

    async def recycle(self, slot: Slot[str]) -> Slot[str] | None:
        """With ``recyclable``: the same actor on a new port, ready for its next call."""
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.recyclable, Exception):
            raise self.recyclable
        if not self.recyclable:
            return None
        self.recycled.append(slot.name)
        self.endings[slot.name] = asyncio.get_running_loop().create_future()
        host, port = slot.media_address
        return Slot(slot.name, slot.handle, (host, port + 1000))

    async def retire(self, slot: Slot[str]) -> None:
        self.retired.append(slot.name)
        if self.lagging:
            self.unreleased += 1
        else:
            self.held -= 1

    def release(self) -> None:
        self.held -= self.unreleased
        self.unreleased = 0


class FakeSleep:
    """Stands in for ``asyncio.sleep``: records delays, wakes the sleepers on ``fire()``."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.sleepers: list[asyncio.Future[None]] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        wake = asyncio.get_running_loop().create_future()
        self.sleepers.append(wake)
        await wake

    def fire(self) -> None:
        waiting = [s for s in self.sleepers if not s.done()]
        assert waiting, "nobody is sleeping"
        for sleeper in waiting:
            sleeper.set_result(None)
        self.sleepers.clear()


async def until(condition: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let other tasks run until ``condition`` holds (no clock involved), or fail."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"still not true after {rounds} rounds of the event loop")


async def settle(pool: CallPool[str]) -> None:
    """Wait until the pool's refills are done (live calls and the re-check timer aside)."""
    while True:
        await asyncio.sleep(0)  # let a fired timer hand its refill over
        if not pool._tasks:
            return
        await asyncio.gather(*list(pool._tasks), return_exceptions=True)


async def test_fill_then_acquire_uses_a_warm_actor_and_refills() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=2)
    await pool.fill()
    assert (factory.created, pool.ready) == (2, 2)
    slot = await pool.acquire("call-a")
    assert slot.name == "slot-1"
    assert pool.locate("call-a") == ("127.0.0.1", 40001)
    assert pool.slot("call-a") == slot
    factory.endings["slot-1"].set_result("stream_stopped")
    await settle(pool)
    assert pool.ready == 2  # refilled
    assert pool.locate("call-a") is None
    assert factory.retired == ["slot-1"]
    await pool.close()
    assert sorted(factory.retired) == ["slot-1", "slot-2", "slot-3"]


async def test_a_call_asking_again_keeps_the_actor_it_has() -> None:
    # A retried inbound webhook acquires for the same call: no second actor is taken.
    factory = FakeFactory()
    pool = CallPool(factory, size=2)
    await pool.fill()
    first = await pool.acquire("call-a")
    assert await pool.acquire("call-a") == first
    assert (pool.ready, pool.live) == (1, 1)
    await pool.close()


async def test_an_empty_pool_starts_an_actor_on_demand() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=0)
    slot = await pool.acquire("call-b")
    assert slot.name == "slot-1"
    assert pool.live == 1
    await pool.close()
    assert factory.retired == ["slot-1"]


async def test_a_dead_actor_ends_its_call_is_retired_and_its_death_is_handed_on() -> None:
    factory = FakeFactory()
    factory.recyclable = True  # a dead actor is retired all the same
    failed: list[tuple[str, str, bool]] = []

    async def on_failed(call_id: str, exc: Exception) -> None:
        # Handed on after its actor is gone: the edge no longer finds the dead address.
        failed.append((call_id, str(exc), pool.locate(call_id) is None))
        if len(failed) == 1:
            raise RuntimeError("the recorder is away")  # logged; the pool carries on

    pool = CallPool(factory, size=1, on_failed=on_failed)
    await pool.fill()
    for count, call_id in enumerate(("call-c", "call-d"), start=1):
        slot = await pool.acquire(call_id)
        factory.endings[slot.name].set_exception(RuntimeError("actor died"))
        await until(functools.partial(lambda n: len(failed) == n, count))
        assert slot.name in factory.retired
    assert failed == [("call-c", "actor died", True), ("call-d", "actor died", True)]
    assert factory.recycled == []
    await pool.close()


async def test_fill_does_not_overshoot_while_actors_are_starting() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=2)
    await asyncio.gather(pool.fill(), pool.fill())
    assert factory.created == 2
    await pool.close()


async def test_refills_stop_at_the_free_slots_and_wait_for_one() -> None:
    factory, sleep = FakeFactory(capacity=3), FakeSleep()
    pool = CallPool(factory, size=2, recheck_s=0.5, sleep=sleep)
    await pool.fill()
    for call in ("a", "b", "c"):
        await pool.acquire(call)
        await settle(pool)
    assert (pool.live, pool.ready, factory.created) == (3, 0, 3)
    assert factory.unplaceable == 0
    assert sleep.delays == [0.5]  # short of room: it looks again later, once
    sleep.fire()
    await settle(pool)
    assert factory.created == 3  # still no room
    assert sleep.delays == [0.5, 0.5]
    factory.endings["slot-1"].set_result("hung_up")
    await settle(pool)
    assert (pool.live, pool.ready, factory.created, factory.unplaceable) == (2, 1, 4, 0)
    await pool.close()


async def test_a_slot_released_late_is_taken_at_the_next_recheck() -> None:
    factory, sleep = FakeFactory(capacity=1), FakeSleep()
    factory.lagging = True
    pool = CallPool(factory, size=1, sleep=sleep)
    await pool.fill()
    await pool.acquire("a")
    await settle(pool)
    factory.endings["slot-1"].set_result("hung_up")
    await settle(pool)
    assert (pool.ready, factory.created) == (0, 1)  # the retired actor still holds the slot
    factory.release()
    sleep.fire()
    await settle(pool)
    assert (pool.ready, factory.created, factory.unplaceable) == (1, 2, 0)
    await pool.close()


async def test_creations_in_flight_count_against_the_free_slots() -> None:
    factory = FakeFactory(capacity=2)
    factory.gate = asyncio.Event()
    pool = CallPool(factory, size=2, sleep=FakeSleep())
    on_demand = asyncio.ensure_future(pool.acquire("a"))  # the pool is dry: started now
    await until(lambda: factory.created == 1)
    fill = asyncio.ensure_future(pool.fill())  # one slot is free, though Ray shows two
    await until(lambda: factory.asking == 1)
    await pool.fill()  # nothing more while both are in flight
    factory.gate.set()
    await asyncio.gather(fill, on_demand)
    await settle(pool)
    assert (factory.created, factory.unplaceable, pool.ready) == (2, 0, 1)
    await pool.close()


async def test_two_refills_asking_at_once_start_one_actor() -> None:
    factory = FakeFactory(capacity=1)
    factory.asked = asyncio.Event()
    pool = CallPool(factory, size=1, sleep=FakeSleep())
    first, second = asyncio.ensure_future(pool.fill()), asyncio.ensure_future(pool.fill())
    await until(lambda: factory.asking == 2)  # both read "1 free"
    factory.asked.set()
    await asyncio.gather(first, second)
    assert (factory.created, factory.unplaceable) == (1, 0)
    await pool.close()


async def test_a_creation_begun_while_asking_for_free_slots_is_counted() -> None:
    factory = FakeFactory(capacity=1)
    factory.asked, factory.gate = asyncio.Event(), asyncio.Event()
    pool = CallPool(factory, size=1, sleep=FakeSleep())
    fill = asyncio.ensure_future(pool.fill())
    await until(lambda: factory.asking == 1)  # it reads "1 free"...
    on_demand = asyncio.ensure_future(pool.acquire("a"))  # ...which a call takes meanwhile
    await until(lambda: factory.created == 1)
    factory.asked.set()
    factory.gate.set()
    await asyncio.gather(fill, on_demand)
    await settle(pool)
    assert (factory.created, factory.unplaceable) == (1, 0)
    await pool.close()


async def test_failed_creations_back_off_instead_of_looping() -> None:
    factory, sleep = FakeFactory(), FakeSleep()
    factory.failing = RuntimeError("worker crashed in __init__")
    pool = CallPool(factory, size=2, backoff=1.0, backoff_max=3.0, sleep=sleep)
    with pytest.raises(RuntimeError, match="worker crashed"):
        await pool.fill()
    assert sleep.delays == [1.0]  # two failures in one round: one back-off
    await pool.fill()  # refills wait for the back-off
    await settle(pool)
    for _ in range(3):
        sleep.fire()
        await settle(pool)
    assert sleep.delays == [1.0, 2.0, 3.0, 3.0]
    factory.failing = None
    sleep.fire()
    await settle(pool)
    assert pool.ready == 2
    factory.failing = RuntimeError("again")
    await pool.acquire("a")
    await settle(pool)
    assert sleep.delays[-1] == 1.0  # a success reset the back-off
    await pool.close()


async def test_unreadable_free_slots_back_off() -> None:
    class Unreachable(FakeFactory):
        async def free_slots(self) -> int:
            raise ConnectionError("GCS unreachable")

    factory, sleep = Unreachable(), FakeSleep()
    pool = CallPool(factory, size=1, sleep=sleep)
    await pool.fill()
    await settle(pool)
    sleep.fire()
    await settle(pool)
    assert (factory.created, sleep.delays) == (0, [1.0, 2.0])
    await pool.close()


async def test_close_stops_the_recheck_timer() -> None:
    factory, sleep = FakeFactory(capacity=0), FakeSleep()
    pool = CallPool(factory, size=1, sleep=sleep)
    await pool.fill()
    assert pool._timer is not None
    timer = pool._timer
    await pool.close()
    assert timer.cancelled()
    factory.capacity = 1
    await pool.fill()
    assert factory.created == 0


async def test_a_finished_calls_actor_serves_the_next_call_when_the_pool_is_short() -> None:
    factory = FakeFactory(capacity=1)
    factory.recyclable = True
    pool = CallPool(factory, size=1)
    await pool.fill()
    first = await pool.acquire("call-1")
    await settle(pool)
    assert pool.ready == 0  # the only slot is taken: no refill
    factory.endings["slot-1"].set_result("completed")
    await until(lambda: pool.ready == 1)
    assert (factory.recycled, factory.retired, factory.created) == (["slot-1"], [], 1)
    assert pool.locate("call-1") is None
    second = await pool.acquire("call-2")
    assert (second.name, second.handle) == (first.name, first.handle)
    assert second.media_address != first.media_address  # the last call's port is gone
    assert pool.locate("call-2") == second.media_address
    await pool.close()
    assert factory.retired == ["slot-1"]


async def test_a_finished_calls_actor_is_retired_once_twice_the_size_are_ready() -> None:
    factory = FakeFactory()
    factory.recyclable = True
    pool = CallPool(factory, size=1)
    await pool.fill()
    for call in ("call-1", "call-2"):
        await pool.acquire(call)
        await settle(pool)
    assert pool.ready == 1  # refilled after each
    factory.endings["slot-1"].set_result("completed")
    await until(lambda: pool.ready == 2)
    assert (factory.recycled, pool.recycled) == (["slot-1"], 1)
    factory.endings["slot-2"].set_result("completed")
    await until(lambda: "slot-2" in factory.retired)
    assert factory.recycled == ["slot-1"]
    await pool.close()


@pytest.mark.parametrize("answer", [False, RuntimeError("actor died")], ids=["spent", "failed"])
async def test_an_actor_that_cannot_be_recycled_is_retired_and_replaced(
    answer: bool | Exception,
) -> None:
    factory = FakeFactory(capacity=1)
    factory.recyclable = answer
    pool = CallPool(factory, size=1)
    await pool.fill()
    await pool.acquire("call-1")
    await settle(pool)
    factory.endings["slot-1"].set_result("completed")
    await until(lambda: pool.ready == 1)
    assert factory.retired == ["slot-1"]
    assert pool.slot("call-1") is None
    assert factory.created == 2
    await pool.close()


async def test_calls_ending_together_recycle_no_more_than_twice_the_size() -> None:
    factory = FakeFactory()
    factory.recyclable = True
    pool = CallPool(factory, size=1)
    await pool.fill()
    for n in range(4):
        await pool.acquire(f"call-{n}")
        await settle(pool)
    factory.gate = asyncio.Event()  # every recycle waits: all four are in flight at once
    for slot in ("slot-1", "slot-2", "slot-3", "slot-4"):
        factory.endings[slot].set_result("completed")
    await until(lambda: len(factory.retired) == 3)  # the ready one and one recycled fill it
    factory.gate.set()
    await until(lambda: pool.ready == 2)
    await settle(pool)
    assert pool.ready == 2 and pool.recycled == 1
    await pool.close()


async def test_a_new_pool_adopts_what_the_crashed_one_left_and_finishes_its_calls() -> None:
    factory = FakeFactory(capacity=3)
    factory.recyclable = True
    crashed = CallPool(factory, size=1)
    await crashed.fill()
    live = await crashed.acquire("call-1")
    await settle(crashed)
    ready = [crashed._ready[0]]  # what the actors would tell a new pool about themselves
    crashed._closed = True  # gone without closing: its actors live on
    pool = CallPool(factory, size=1)
    pool.adopt(ready, {"call-1": live})
    assert (pool.ready, pool.live, pool.locate("call-1")) == (1, 1, live.media_address)
    second = await pool.acquire("call-2")
    assert second == ready[0]  # no new actor: the adopted one served
    await settle(pool)
    factory.endings[live.name].set_result("completed")  # the adopted call ends
    await until(lambda: pool.locate("call-1") is None)
    assert live.name in factory.recycled  # watched and recycled like its own
    assert factory.created == 3  # the crashed pool's two and this one's refill
    await pool.close()


async def test_a_call_waiting_for_an_actor_started_for_it_is_served_and_waits_boundedly() -> None:
    factory = FakeFactory()
    factory.gate = asyncio.Event()  # the cluster is full: the creation does not finish
    pool = CallPool(factory, size=0, sleep=FakeSleep(), create_timeout_s=0.05)
    waiting = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.created == 1)
    assert pool.serves("a") and not pool.serves("b")  # not to be settled as abandoned
    with pytest.raises(TimeoutError):
        await waiting  # the placing fails in time, rather than waiting on a full cluster
    assert not pool.serves("a")
    await pool.close()


async def test_a_call_asked_for_twice_while_its_actor_starts_gets_one_actor() -> None:
    # A retried inbound webhook while the pool, run dry, starts an actor for the call.
    factory = FakeFactory()
    factory.gate = asyncio.Event()
    pool = CallPool(factory, size=0, sleep=FakeSleep())
    first = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.created == 1)
    second = asyncio.ensure_future(pool.acquire("a"))
    first.cancel()  # the first asker gave up: the actor still goes to the call
    factory.gate.set()
    slot = await second
    assert factory.created == 1 and pool.slot("a") == slot and pool.live == 1
    await pool.close()


async def test_a_call_hung_up_while_its_actor_starts_is_not_handed_one() -> None:
    factory = FakeFactory()
    factory.gate = asyncio.Event()
    pool = CallPool(factory, size=0, sleep=FakeSleep())
    assert not pool.cancel("a")  # not waiting for an actor: nothing to cancel
    acquiring = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.created == 1)
    assert pool.cancel("a")
    factory.gate.set()
    with pytest.raises(CallCanceled, match="call a was hung up"):
        await acquiring
    # The actor started for it waits for the next call, which gets it at once.
    assert (pool.serves("a"), pool.ready, pool.live) == (False, 1, 0)
    assert (await pool.acquire("b")).name == "slot-1" and factory.created == 1
    assert not pool.cancel("b")  # served: a live call is hung up at its actor
    await pool.close()


async def test_a_call_hung_up_while_its_actor_fails_to_start_is_canceled_all_the_same() -> None:
    class Crashing(FakeFactory):
        async def create(self) -> Slot[str]:
            self.created += 1
            assert self.gate is not None
            await self.gate.wait()
            raise RuntimeError("worker crashed in __init__")

    factory = Crashing()
    factory.gate = asyncio.Event()
    pool = CallPool(factory, size=0, sleep=FakeSleep())
    acquiring = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.created == 1)
    assert pool.cancel("a")
    factory.gate.set()
    with pytest.raises(CallCanceled, match="call a was hung up"):
        await acquiring
    assert not pool.serves("a")
    await pool.close()


async def test_a_call_a_crashed_pool_was_told_to_cancel_is_refused_by_the_new_one() -> None:
    # The crashed pool was starting the call's actor when the hang-up came; the placing
    # asks the new pool again, which must refuse it rather than hand out an actor.
    factory = FakeFactory()
    pool = CallPool(factory, size=1)
    await pool.fill()
    pool.restore_canceled({"a"})
    with pytest.raises(CallCanceled, match="call a was hung up"):
        await pool.acquire("a")
    assert (pool.serves("a"), pool.ready, pool.live) == (False, 1, 0)
    assert (await pool.acquire("b")).name == "slot-1"  # the next call's, as before
    await pool.close()


async def test_a_call_hung_up_before_it_asks_for_an_actor_is_refused_one() -> None:
    # Its record says it is being placed; its acquire is still on its way to the pool.
    factory = FakeFactory()
    pool = CallPool(factory, size=1)
    await pool.fill()
    assert not pool.cancel("a")  # not said to be placing: nothing known of it
    assert pool.cancel("a", placing=True)
    assert pool.cancel("a")  # a retried hang-up: still canceled
    with pytest.raises(CallCanceled):
        await pool.acquire("a")
    live = await pool.acquire("b")
    assert not pool.cancel("b", placing=True)  # served: hung up at its actor
    assert pool.slot("b") == live
    await pool.close()


# -- ready actors that died while they waited ---------------------------------------


async def test_a_ready_actor_that_died_is_retired_and_the_call_gets_the_next() -> None:
    # Its node was lost while it waited: handed out, it would fail the call's placing.
    factory = FakeFactory()
    failed: list[str] = []

    async def on_failed(call_id: str, exc: Exception) -> None:
        failed.append(call_id)

    pool = CallPool(factory, size=2, on_failed=on_failed, lost=factory.lost)
    await pool.fill()
    factory.dead.add("slot-1")
    slot = await pool.acquire("call-a")
    assert slot.name == "slot-2" and pool.slot("call-a") == slot
    await settle(pool)
    assert "slot-1" in factory.retired and "slot-1" not in pool.ready_names()
    assert "slot-1" not in pool.known_names()
    assert pool.ready == 2  # refilled: the dead one is counted nowhere
    factory.endings["slot-1"].set_exception(RuntimeError("actor died"))  # as Ray would
    factory.endings["slot-2"].set_result("completed")
    await until(lambda: pool.live == 0)
    await settle(pool)
    assert failed == []  # no call ever ran on the dead one: no death to record
    await pool.close()


async def test_a_call_finding_every_ready_actor_dead_gets_one_started_for_it() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=2, lost=factory.lost)
    await pool.fill()
    factory.dead |= {"slot-1", "slot-2"}
    slot = await pool.acquire("call-a")
    assert slot.name not in factory.dead and factory.checked == ["slot-1", "slot-2"]
    await settle(pool)
    assert {"slot-1", "slot-2"} <= set(factory.retired)
    assert pool.ready == 2 and not set(pool.ready_names()) & factory.dead
    await pool.close()


async def test_a_ready_actor_whose_check_fails_is_handed_out_not_retired() -> None:
    # Only an actor known to be gone is passed over; the placing finds out about the rest.
    factory = FakeFactory()
    factory.check_error = RuntimeError("the GCS is briefly unreachable")
    pool = CallPool(factory, size=1, lost=factory.lost)
    await pool.fill()
    assert (await pool.acquire("call-a")).name == "slot-1"
    await settle(pool)
    assert factory.retired == [] and factory.created == 2
    await pool.close()


async def test_a_call_asked_for_again_while_its_ready_actor_is_checked_gets_one_actor() -> None:
    factory = FakeFactory()
    factory.checks = asyncio.Event()
    pool = CallPool(factory, size=1, lost=factory.lost)
    await pool.fill()
    first = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.checked == ["slot-1"])
    assert pool.serves("a") and "slot-1" in pool.known_names()  # a takeover leaves it be
    second = asyncio.ensure_future(pool.acquire("a"))
    factory.checks.set()
    assert await first == await second == pool.slot("a")
    assert factory.checked == ["slot-1"] and pool.live == 1
    await pool.close()


async def test_a_call_hung_up_while_its_ready_actor_is_checked_leaves_it_ready() -> None:
    factory = FakeFactory()
    factory.checks = asyncio.Event()
    pool = CallPool(factory, size=1, lost=factory.lost)
    await pool.fill()
    acquiring = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.checked == ["slot-1"])
    assert pool.cancel("a")
    factory.checks.set()
    with pytest.raises(CallCanceled, match="call a was hung up"):
        await acquiring
    assert pool.ready_names()[0] == "slot-1" and pool.live == 0  # the next call's
    await pool.close()


async def test_a_pool_closing_while_a_ready_actor_is_checked_retires_it() -> None:
    factory = FakeFactory()
    factory.checks = asyncio.Event()
    pool = CallPool(factory, size=1, lost=factory.lost)
    await pool.fill()
    acquiring = asyncio.ensure_future(pool.acquire("a"))
    await until(lambda: factory.checked == ["slot-1"])
    await pool.close()
    assert "slot-1" in factory.retired  # not left running, owned by nobody
    with pytest.raises(asyncio.CancelledError):
        await acquiring
