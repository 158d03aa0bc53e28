"""Twilio REST from async code: a 429 is tried again, any other error is not."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from actors import twilio_rest
from actors.twilio_rest import ATTEMPTS, twilio_call
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator

TO, FROM = "+15551230000", "+15559870000"
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
