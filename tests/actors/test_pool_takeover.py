"""The pool actor's takeover of running call actors, as a plain object (no cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors import ray_wiring
from actors.pool import Slot
from switchboard.errors import CallCanceled

PoolActor = ray_wiring.RayCallPool.__ray_actor_class__  # the class under @ray.remote


class FakeCancels:
    """The GCS's record of canceled placings (``KvCancels``), in memory."""

    def __init__(self, noted: set[str] | None = None) -> None:
        self.noted = set(noted or ())
        self.failing = False
        self.unreadable = False
        self.slow: asyncio.Event | None = None  # when set, a note waits for it

    async def note(self, call_id: str) -> None:
        if self.failing:
            raise RuntimeError("the GCS is briefly unreachable")
        if self.slow is not None:
            await self.slow.wait()
        self.noted.add(call_id)

    async def forget(self, call_id: str) -> None:
        self.noted.discard(call_id)

    async def recent(self) -> set[str]:
        if self.unreadable:
            raise RuntimeError("the GCS is briefly unreachable")
        return set(self.noted)


@pytest.fixture(autouse=True)
def no_cluster() -> Iterator[None]:
    """These tests run the pool actor's class as a plain object: none may start Ray
    (``ray.available_resources`` would, leaving a cluster the Ray suites then collide
    with)."""
    yield
    assert not ray.is_initialized(), "a test started a Ray cluster"


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Any:
    async def no_gauges(pool: object, metrics: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(ray_wiring, "ray_pool_metrics", lambda: None)
    monkeypatch.setattr(ray_wiring, "watch_pool", no_gauges)
    monkeypatch.setattr(ray_wiring, "ADOPT_RETRY_S", 0.0)
    pool = PoolActor(1)
    pool._cancels = FakeCancels()  # no GCS here
    return pool


async def test_a_takeover_that_failed_is_tried_again(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Until the running actors are known, no call can be said to have none.
    attempts: list[int] = []

    async def existing(skip: object = ()) -> tuple[list[object], dict[str, object], list[object]]:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the GCS is briefly unreachable")
        return [], {}, []

    monkeypatch.setattr(pool.factory, "existing", existing)
    assert await pool.serves("an-old-call") is None
    assert await pool.serves("an-old-call") is False
    assert await pool.serves("an-old-call") is False
    assert len(attempts) == 2
    if pool._gauges is not None:
        pool._gauges.cancel()


async def test_a_takeover_tried_again_leaves_the_pools_own_actors_alone(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started since the failed try (one ready, one still starting): describing them, a
    # takeover would retire an actor handed out and not yet prepared, or hand one out twice.
    skipped: list[set[str]] = []

    async def existing(skip: Any = ()) -> tuple[list[object], dict[str, object], list[object]]:
        skipped.append(set(skip))
        if len(skipped) == 1:
            raise RuntimeError("the GCS is briefly unreachable")
        return [], {}, []

    monkeypatch.setattr(pool.factory, "existing", existing)
    assert await pool.serves("an-old-call") is None
    pool.pool.adopt([Slot("call-ready", None, ("127.0.0.1", 1))], {})
    pool.factory.starting.add("call-starting")
    assert await pool.serves("an-old-call") is False
    assert skipped == [set(), {"call-ready", "call-starting"}]
    if pool._gauges is not None:
        pool._gauges.cancel()


def with_cancels(pool: Any, monkeypatch: pytest.MonkeyPatch, cancels: FakeCancels) -> None:
    async def existing(skip: object = ()) -> tuple[list[object], dict[str, object], list[object]]:
        return [], {}, []

    async def create() -> Slot[Any]:  # no cluster: an actor at once
        return Slot("call-8", object(), ("127.0.0.1", 40008))

    monkeypatch.setattr(pool.factory, "existing", existing)
    monkeypatch.setattr(pool.factory, "create", create)
    monkeypatch.setattr(pool, "_cancels", cancels)


def starting_gated(pool: Any, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    gate = asyncio.Event()

    async def create() -> Slot[Any]:
        await gate.wait()
        return Slot("call-9", object(), ("127.0.0.1", 40009))

    monkeypatch.setattr(pool.factory, "create", create)
    return gate


async def test_a_restarted_pool_refuses_a_call_its_predecessor_was_told_to_cancel(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crashed pool was starting the call's actor when the hang-up came; the placing
    # asks again here, and must not be handed an actor (its phone would ring).
    cancels = FakeCancels({"call-1"})
    with_cancels(pool, monkeypatch, cancels)
    with pytest.raises(CallCanceled, match="call call-1 was hung up"):
        await pool.acquire("call-1")
    assert cancels.noted == set()  # refused once: nothing left to remember
    assert await pool.serves("call-1") is False
    pool._gauges.cancel()


async def test_a_cancel_is_kept_outside_the_pool_until_its_placing_is_refused(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancels = FakeCancels()
    with_cancels(pool, monkeypatch, cancels)
    gate = starting_gated(pool, monkeypatch)
    acquiring = asyncio.ensure_future(pool.acquire("call-1"))
    while not pool.pool.serves("call-1"):  # its actor is being started for it
        await asyncio.sleep(0)
    assert await pool.cancel("call-1")
    assert cancels.noted == {"call-1"}  # a pool started after a crash would know
    gate.set()
    with pytest.raises(CallCanceled):
        await acquiring
    assert cancels.noted == set()
    pool._gauges.cancel()


async def test_a_cancel_the_gcs_could_not_keep_still_cancels(
    pool: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cancels = FakeCancels()
    cancels.failing = True
    with_cancels(pool, monkeypatch, cancels)
    gate = starting_gated(pool, monkeypatch)
    acquiring = asyncio.ensure_future(pool.acquire("call-1"))
    while not pool.pool.serves("call-1"):
        await asyncio.sleep(0)
    assert await pool.cancel("call-1")
    assert "call call-1: keeping its cancel" in caplog.text
    gate.set()
    with pytest.raises(CallCanceled):
        await acquiring
    pool._gauges.cancel()


async def test_a_pool_that_cannot_read_the_kept_cancels_hands_out_no_actor(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancels = FakeCancels({"call-1"})
    cancels.unreadable = True
    with_cancels(pool, monkeypatch, cancels)
    with pytest.raises(RuntimeError, match="briefly unreachable"):
        await pool.acquire("call-1")  # the placing fails rather than maybe dial
    assert not pool.pool.serves("call-1")
    cancels.unreadable = False
    with pytest.raises(CallCanceled):
        await pool.acquire("call-1")
    pool._gauges.cancel()


async def test_a_cancel_on_a_restarted_pool_is_kept_for_the_call_it_will_refuse(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The crashed pool kept it and died before answering: the hang-up, retried here, is
    # answered 202 (the placing will be refused), not 409.
    with_cancels(pool, monkeypatch, FakeCancels({"call-1"}))
    assert await pool.cancel("call-1") is True
    with pytest.raises(CallCanceled):
        await pool.acquire("call-1")
    pool._gauges.cancel()


async def test_a_refused_placing_forgets_its_cancel_only_once_it_was_kept(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forgetting before the note lands would leave the note behind for good.
    cancels = FakeCancels()
    cancels.slow = asyncio.Event()
    with_cancels(pool, monkeypatch, cancels)
    gate = starting_gated(pool, monkeypatch)
    acquiring = asyncio.ensure_future(pool.acquire("call-1"))
    while not pool.pool.serves("call-1"):
        await asyncio.sleep(0)
    canceling = asyncio.ensure_future(pool.cancel("call-1"))
    while "call-1" not in pool._noting:
        await asyncio.sleep(0)
    gate.set()  # the actor is up: the placing is refused while the note is on its way
    for _ in range(100):  # loop turns enough for the refusal to be answered
        await asyncio.sleep(0)
    assert pool.pool.ready == 1 and not acquiring.done()  # it waits for the note
    cancels.slow.set()
    with pytest.raises(CallCanceled):
        await acquiring
    assert await canceling is True
    assert cancels.noted == set()
    pool._gauges.cancel()
