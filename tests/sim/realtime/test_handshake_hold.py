"""A test aid: the emulator can hold new sessions at their handshake, then let them go."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
import websockets

from sim.processes import EmulatorProcesses
from sim.scenario import parse_scenario
from sim.testing_realtime import run_realtime_emulator

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer sk-test"}


async def test_a_held_handshake_waits_until_released() -> None:
    async with run_realtime_emulator() as emu:
        emu.hold_handshakes()
        connecting = asyncio.ensure_future(
            websockets.connect(f"{emu.websocket_base_url}/realtime?model=gpt-realtime",
                               additional_headers=AUTH)
        )  # fmt: skip
        await emu.wait_held(1)
        assert not connecting.done() and emu.sessions == []
        emu.release_handshakes()
        async with await connecting as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"
        assert emu.held == 0


async def test_handshakes_go_through_once_the_hold_is_released() -> None:
    async with run_realtime_emulator() as emu:
        emu.hold_handshakes()
        emu.release_handshakes()
        url = f"{emu.websocket_base_url}/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers=AUTH) as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"
        with pytest.raises(TimeoutError):
            await emu.wait_held(1, timeout=0.05)  # nothing is held


async def test_the_emulator_process_holds_and_releases_on_request() -> None:
    scenario = parse_scenario({"caller": [], "assistant": []})
    async with EmulatorProcesses(
        scenario, account_sid="AC" + "0" * 32, auth_token="t", api_key="sk-test"
    ) as emus:
        url = emus.realtime_url.replace("http", "ws", 1) + "/realtime?model=gpt-realtime"
        async with emus.holding_handshakes():
            connecting = asyncio.ensure_future(websockets.connect(url, additional_headers=AUTH))
            await emus.wait_held(1, timeout=10)
            assert not connecting.done()
        async with await connecting as ws:
            assert orjson.loads(await ws.recv())["type"] == "session.created"


async def test_an_emulator_stopped_with_a_handshake_held_stops() -> None:
    async with asyncio.timeout(60):  # a hang guard: held, the shutdown would never end
        async with run_realtime_emulator() as emu:
            emu.hold_handshakes()
            url = f"{emu.websocket_base_url}/realtime?model=gpt-realtime"
            connecting = asyncio.ensure_future(websockets.connect(url, additional_headers=AUTH))
            await emu.wait_held(1)
    # Released as it stopped: the handshake completed, or the socket was closed.
    with contextlib.suppress(websockets.exceptions.WebSocketException, OSError):
        await (await connecting).close()
