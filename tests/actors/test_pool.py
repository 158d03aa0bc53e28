"""The warm pool over a fake slot factory: no Ray, no sleeps."""

from __future__ import annotations

import asyncio

from actors.pool import CallPool, Slot


class FakeFactory:
    def __init__(self) -> None:
        self.created = 0
        self.retired: list[str] = []
        self.endings: dict[str, asyncio.Future[str]] = {}

    async def create(self) -> Slot[str]:
        self.created += 1
        name = f"slot-{self.created}"
        self.endings[name] = asyncio.get_running_loop().create_future()
        return Slot(name, f"handle-{self.created}", ("127.0.0.1", 40000 + self.created))

    def finished(self, slot: Slot[str]) -> asyncio.Future[str]:
        return self.endings[slot.name]

    async def retire(self, slot: Slot[str]) -> None:
        self.retired.append(slot.name)


async def settle(pool: CallPool[str]) -> None:
    while pool._tasks:
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
    assert pool.ended == {"call-a": "stream_stopped"}
    assert factory.retired == ["slot-1"]
    await pool.close()
    assert sorted(factory.retired) == ["slot-1", "slot-2", "slot-3"]


async def test_an_empty_pool_starts_an_actor_on_demand() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=0)
    slot = await pool.acquire("call-b")
    assert slot.name == "slot-1"
    assert pool.live == 1
    await pool.close()
    assert factory.retired == ["slot-1"]


async def test_a_dead_actor_ends_its_call_and_is_retired() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=1)
    await pool.fill()
    await pool.acquire("call-c")
    factory.endings["slot-1"].set_exception(RuntimeError("actor died"))
    await settle(pool)
    assert pool.ended["call-c"] == "actor_failed"
    assert "slot-1" in factory.retired
    await pool.close()


async def test_fill_does_not_overshoot_while_actors_are_starting() -> None:
    factory = FakeFactory()
    pool = CallPool(factory, size=2)
    await asyncio.gather(pool.fill(), pool.fill())
    assert factory.created == 2
    await pool.close()
