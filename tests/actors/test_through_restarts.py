"""Calls to the pool or a recorder wait out a restart: Ray answers ActorUnavailableError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from ray.exceptions import ActorUnavailableError

from actors.ray_wiring import through_restarts


def restarting(times: int, answer: str = "ready") -> tuple[list[int], Callable[[], Awaitable[str]]]:
    attempts: list[int] = []

    async def call() -> str:
        attempts.append(1)
        if len(attempts) <= times:
            raise ActorUnavailableError("The actor is temporarily unavailable", None)
        return answer

    return attempts, call


async def test_a_call_is_made_again_until_the_actor_is_back() -> None:
    attempts, call = restarting(times=2)
    assert await through_restarts(call) == "ready"
    assert len(attempts) == 3


async def test_an_actor_that_stays_away_fails_the_call_in_the_end() -> None:
    attempts, call = restarting(times=1_000)
    with pytest.raises(ActorUnavailableError):
        await through_restarts(call, wait_s=0.2)
    assert 2 <= len(attempts) < 10


async def test_other_errors_are_not_repeated() -> None:
    attempts: list[int] = []

    async def call() -> str:
        attempts.append(1)
        raise RuntimeError("the actor died for good")

    with pytest.raises(RuntimeError, match="for good"):
        await through_restarts(call)
    assert attempts == [1]
