"""Fixtures for the Realtime emulator tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from sim.testing_realtime import (
    RunningRealtimeEmulator,
    assert_valid_server_events,
    run_realtime_emulator,
)


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[RunningRealtimeEmulator]:
    async with run_realtime_emulator(
        first_audio_ms=40, speed=20.0, transcription_delay_ms=10
    ) as running:
        yield running
        for session in running.sessions:
            assert session.violations == []
            assert_valid_server_events(session.server_events())
