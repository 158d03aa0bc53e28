"""Twilio REST from async code: a 429 is tried again, any other error is not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from actors import twilio_rest
from actors.twilio_rest import ATTEMPTS, end_call, twilio_call
from sim.scenario import parse_scenario
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator

TO, FROM = "+15551230000", "+15559870000"
SLOW = "+15551230099"  # rings until the test is done
HOLD = '<Response><Pause length="30"/></Response>'


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_rest, "FIRST_WAIT_S", 0.01)


def sdk(emu: TwilioEmulator) -> Client:
    client = Client(emu.config.account_sid, emu.config.auth_token, environment={})
    client.api.base_url = emu.base_url
    return client


class Counted:
    """``client.calls.create``, counting its attempts."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.attempts = 0

    def create(self, **params: object) -> object:
        self.attempts += 1
        return self.client.calls.create(**params)


async def test_a_throttled_request_is_made_again() -> None:
    async with run_twilio_emulator(
        account_sid="AC" + "5" * 32, auth_token="tok", throttle_429_every=2
    ) as emu:
        calls = Counted(sdk(emu))
        await twilio_call(calls.client.calls.list)  # the 1st request; the 2nd gets 429
        created = await twilio_call(calls.create, to=TO, from_=FROM, twiml=HOLD)
        assert calls.attempts == 2
        assert list(emu.calls) == [created.sid]  # type: ignore[attr-defined]


async def test_throttled_every_time_it_gives_up_after_its_attempts() -> None:
    async with run_twilio_emulator(
        account_sid="AC" + "6" * 32, auth_token="tok", throttle_429_every=1
    ) as emu:
        calls = Counted(sdk(emu))
        with pytest.raises(TwilioRestException) as info:
            await twilio_call(calls.create, to=TO, from_=FROM, twiml=HOLD)
        assert (info.value.status, calls.attempts) == (429, ATTEMPTS)
        assert emu.calls == {}


async def test_any_other_error_is_not_retried() -> None:
    async with run_twilio_emulator(account_sid="AC" + "7" * 32, auth_token="tok") as emu:
        calls = Counted(sdk(emu))
        with pytest.raises(TwilioRestException) as info:
            await twilio_call(calls.create, to="not a number", from_=FROM, twiml=HOLD)
        assert info.value.status == 400
        assert calls.attempts == 1


async def test_ending_a_call_picks_the_status_its_state_needs_and_an_ended_one_is_no_error() -> (
    None
):
    numbers = {"default": {"answer_after_s": 0.05}, SLOW: {"answer_after_s": 600}}
    scenario = parse_scenario({"numbers": numbers})
    async with run_twilio_emulator(
        account_sid="AC" + "7" * 32, auth_token="tok", scenario=scenario
    ) as emu:
        client = sdk(emu)
        held = await twilio_call(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
        await emu.wait_for_call_status(held.sid, "in-progress")
        assert await end_call(client, held.sid) is True  # answered: completed
        await emu.wait_for_call_status(held.sid, "completed")
        # Over already (a hang-up racing the call's own end): Twilio refuses with 21220,
        # which is what was wanted, not a failure to report.
        assert await end_call(client, held.sid) is False
        ringing = await twilio_call(client.calls.create, to=SLOW, from_=FROM, twiml=HOLD)
        assert await end_call(client, ringing.sid, "ringing") is True  # not answered: canceled
        await emu.wait_for_call_status(ringing.sid, "canceled")
        assert await end_call(client, "CA" + "0" * 32) is False  # Twilio has no such call
        # A status that went stale (a late `ringing` of a call since answered): the cancel
        # Twilio takes and ignores is not taken for the end.
        answered = await twilio_call(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
        await emu.wait_for_call_status(answered.sid, "in-progress")
        assert await end_call(client, answered.sid, "ringing") is True
        await emu.wait_for_call_status(answered.sid, "completed")


async def test_ending_a_call_raises_a_refusal_other_than_not_modifiable() -> None:
    # Bad credentials (20003) are no "call is over": raised as they are, no fetch made
    # (a fetch saying completed would otherwise pass the refusal off as an ended call).
    asked: list[str] = []

    def update(**kw: object) -> None:
        asked.append("update")
        raise TwilioRestException(401, "/Calls/CA1", "Authenticate", 20003)

    def fetch() -> object:
        asked.append("fetch")
        return SimpleNamespace(status="completed")

    client = SimpleNamespace(calls=lambda sid: SimpleNamespace(update=update, fetch=fetch))
    with pytest.raises(TwilioRestException) as info:
        await end_call(client, "CA" + "1" * 32)
    assert info.value.code == 20003
    assert asked == ["update"]
