"""The pool actor's takeover of running call actors, as a plain object (no cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors import ray_wiring

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

    async def existing() -> tuple[list[object], dict[str, object], list[object]]:
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
