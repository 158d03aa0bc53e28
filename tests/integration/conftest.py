"""Every live test also checks the wire: what the emulators refused or answered with an
error is a protocol bug in Switchboard (or in an emulator), whatever the test asserts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
async def no_protocol_problems(world: Any) -> AsyncIterator[None]:
    before = await world.emulators.problems()
    yield
    after = await world.emulators.problems()
    new = {
        key: found[len(before.get(key, [])) :]
        for key, found in after.items()
        if len(found) > len(before.get(key, []))
    }
    assert not new, f"the emulators saw protocol problems during this test: {new}"
