"""The pool actor's takeover of running call actors, as a plain object (no cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors import ray_wiring
from actors.pool import Slot

PoolActor = ray_wiring.RayCallPool.__ray_actor_class__  # the class under @ray.remote


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> Any:
    async def no_gauges(pool: object, metrics: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(ray_wiring, "ray_pool_metrics", lambda: None)
    monkeypatch.setattr(ray_wiring, "watch_pool", no_gauges)
    monkeypatch.setattr(ray_wiring, "ADOPT_RETRY_S", 0.0)
    return PoolActor(1)


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
