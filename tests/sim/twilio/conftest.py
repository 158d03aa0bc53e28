"""Fixtures for the Twilio emulator tests: each test gets its own probe app and emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from sim.scenario import Scenario, parse_scenario
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator
from sim.twilio.probe_app import ProbeApp

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"


def fast_scenario(**numbers: dict[str, object]) -> Scenario:
    """Answer after 0.1 s unless ``numbers`` (destination -> behaviour) says otherwise."""
    table: dict[str, object] = {"default": {"outcome": "human", "answer_after_s": 0.1}}
    table.update(numbers)
    return parse_scenario({"numbers": table})


@pytest_asyncio.fixture
async def app() -> AsyncIterator[ProbeApp]:
    async with ProbeApp(AUTH_TOKEN).running() as probe:
        yield probe


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[TwilioEmulator]:
    """Answers after 0.1 s; a silent callee (tests inject what it says)."""
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        scenario=fast_scenario(),
        default_caller=False,
    ) as emulator:
        yield emulator
