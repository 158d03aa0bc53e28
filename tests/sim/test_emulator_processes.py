"""Both emulators in child processes (``sim.processes``): requests, waits and errors."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from openai import AsyncOpenAI
from twilio.rest import Client

from sim.processes import EmulatorProcesses
from sim.scenario import parse_scenario
from sim.twilio.probe_app import ProbeApp, stream_twiml

ACCOUNT = "AC" + "5" * 32


async def test_a_long_wait_does_not_hold_up_another_request_and_errors_come_back() -> None:
    async with EmulatorProcesses(
        parse_scenario({}), account_sid=ACCOUNT, auth_token="t" * 32, api_key="sk-x"
    ) as emus:
        assert emus.twilio_url.startswith("http://127.0.0.1:")
        assert emus.realtime_url.startswith("http://127.0.0.1:")
        assert len(set(emus.pids)) == 2 and os.getpid() not in emus.pids
        # No call will ever stream: this waits its whole time-out inside the child.
        waiting = asyncio.create_task(emus.wait_streaming(1, timeout=2))
        quick = asyncio.create_task(emus.sessions())
        done, _ = await asyncio.wait({waiting, quick}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {quick}
        assert quick.result() == []
        assert await waiting is False
        with pytest.raises(RuntimeError, match="twilio emulator, wait_for_call_status: KeyError"):
            await emus.wait_for_call_status("CA" + "0" * 32, "completed", 1)


async def test_requests_fail_rather_than_hang_once_an_emulators_process_has_died() -> None:
    async with EmulatorProcesses(
        parse_scenario({}), account_sid=ACCOUNT, auth_token="t" * 32, api_key="sk-x"
    ) as emus:
        waiting = asyncio.create_task(emus.wait_streaming(1, timeout=60))
        assert await emus.sessions() == []  # both children answer
        os.kill(emus.twilio.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="process ended"):
            await asyncio.wait_for(waiting, 30)
        with pytest.raises(RuntimeError, match="process has ended"):
            await emus.wait_ended(timeout=1)
        assert await emus.sessions() == []  # the other one is unaffected


async def test_a_caller_rings_a_number_of_the_twilio_child() -> None:
    async with (
        ProbeApp("t" * 32).running() as app,
        EmulatorProcesses(
            parse_scenario({}), account_sid=ACCOUNT, auth_token="t" * 32, api_key="sk-x"
        ) as emus,
    ):
        with pytest.raises(RuntimeError, match=r"ring_in: InboundCallRefused: .* is not one of"):
            await emus.ring_in("+15551230004", "+15005550006")
        app.twiml["say"] = "<Response><Say>Hello</Say></Response>"
        client = Client(ACCOUNT, "t" * 32, environment={})
        client.api.base_url = emus.twilio_url
        await asyncio.to_thread(
            client.incoming_phone_numbers.create,
            phone_number="+15551230004",
            voice_url=f"{app.base_url}/twiml/say",
        )
        sid = await emus.ring_in("+15551230004", "+15005550006")
        call = await emus.wait_for_call_status(sid, "completed", 30)
    (hit,) = app.hits_for("/twiml/say")
    assert hit.valid and hit.params["Direction"] == "inbound"
    assert (call.direction, call.to, call.from_) == ("inbound", "+15551230004", "+15005550006")


async def test_problems_name_what_each_emulator_refused_of_the_app() -> None:
    """What the live tests check after each test: a stream message with another call's
    streamSid, and an event the model answers with an error, are both reported."""
    async with (
        ProbeApp("t" * 32).running() as app,
        EmulatorProcesses(
            parse_scenario({}), account_sid=ACCOUNT, auth_token="t" * 32, api_key="sk-x"
        ) as emus,
    ):
        assert await emus.problems() == {}
        client = Client(ACCOUNT, "t" * 32, environment={})
        client.api.base_url = emus.twilio_url
        call = await asyncio.to_thread(
            client.calls.create,
            to="+15551230005",
            from_="+15005550006",
            twiml=stream_twiml(app.ws_url),
        )
        media = await app.next_session()
        await media.next("start")
        wrong = "MZ" + "0" * 32
        await media.send({"event": "mark", "streamSid": wrong, "mark": {"name": "m1"}})
        await media.next("mark")  # echoed: the phone has read it

        realtime = AsyncOpenAI(
            api_key="sk-x", websocket_base_url=emus.realtime_url.replace("http://", "ws://")
        )
        async with realtime.realtime.connect(model="gpt-realtime") as conn:
            session = (await conn.recv()).session
            await conn.response.cancel()  # no response is active
            async for event in conn:
                if event.type == "error":
                    break
        problems = await emus.problems()
        media.close()
    assert problems == {
        call.sid: [f"stream_sid_mismatch: {wrong}"],
        session.id: ["error response_cancel_not_active: " + event.error.message],
    }
