"""The Calls REST API against the real twilio SDK, sync and async (protocols.md 2.1-2.9)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from sim.scenario import parse_scenario
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator
from sim.twilio.calls import CallEvent

# twilio 9.13's async client still uses aiohttp's deprecated BasicAuth: not ours to fix
pytestmark = pytest.mark.filterwarnings(
    "ignore:BasicAuth is deprecated:DeprecationWarning",
    "ignore:The 'auth' parameter is deprecated:DeprecationWarning",
)


TO, TO2, FROM = "+15551230000", "+15551230001", "+15559870000"
SLOW = "+15550000030"  # rings for 30 s
HOLD = '<Response><Pause length="30"/></Response>'  # keeps a call up with no stream


def sdk(emu: TwilioEmulator, token: str | None = None) -> Client:
    client = Client(emu.config.account_sid, token or emu.config.auth_token, environment={})
    client.api.base_url = emu.base_url
    return client


@pytest_asyncio.fixture
async def async_client(emu: TwilioEmulator) -> AsyncIterator[Client]:
    http = AsyncTwilioHttpClient()
    client = Client(emu.config.account_sid, emu.config.auth_token, environment={}, http_client=http)
    client.api.base_url = emu.base_url
    yield client
    await http.close()


def scenario_with_slow_number() -> object:
    return parse_scenario(
        {
            "numbers": {
                "default": {"answer_after_s": 0.05},
                SLOW: {"answer_after_s": 30},
            }
        }
    )


async def test_sync_create_fetch_update_hang_up(emu: TwilioEmulator) -> None:
    client = sdk(emu)
    call = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.status, call.direction, call.api_version) == (
        "queued",
        "outbound-api",
        "2010-04-01",
    )
    assert isinstance(call.date_created, datetime) and call.date_created.tzinfo is not None
    assert call.uri == f"/2010-04-01/Accounts/{emu.config.account_sid}/Calls/{call.sid}.json"
    assert (call.to, call._from, call.to_formatted) == (TO, FROM, "(555) 123-0000")
    assert emu.call(call.sid).param("Twiml") == HOLD

    await emu.wait_for_call_status(call.sid, "in-progress")
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.status == "in-progress" and isinstance(fetched.start_time, datetime)
    assert fetched.end_time is None and fetched.duration is None

    hung = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    assert hung.status == "completed"
    final = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert final.status == "completed" and isinstance(final.end_time, datetime)
    assert final.duration is not None and int(final.duration) >= 0
    assert emu.call(call.sid).end_reason == "api"


async def test_async_sdk_create_fetch_list_update(
    emu: TwilioEmulator, async_client: Client
) -> None:
    call = await async_client.calls.create_async(to=TO, from_=FROM, twiml=HOLD)
    assert call.status == "queued"
    await emu.wait_for_call_status(call.sid, "in-progress")
    fetched = await async_client.calls(call.sid).fetch_async()
    assert fetched.status == "in-progress"
    listed = await async_client.calls.list_async(to=TO)
    assert [c.sid for c in listed] == [call.sid]
    updated = await async_client.calls(call.sid).update_async(status="completed")
    assert updated.status == "completed"
    with pytest.raises(TwilioRestException) as info:
        await async_client.calls("CA" + "f" * 32).fetch_async()
    assert (info.value.status, info.value.code) == (404, 20404)


async def test_list_filters_and_paging(emu: TwilioEmulator) -> None:
    client = sdk(emu)
    sids = []
    for to in (TO, TO2, TO):
        call = await asyncio.to_thread(client.calls.create, to=to, from_=FROM, twiml=HOLD)
        sids.append(call.sid)
    await emu.wait_for_call_status(sids[1], "in-progress")
    await asyncio.to_thread(client.calls(sids[1]).update, status="completed")

    to_first = await asyncio.to_thread(client.calls.list, to=TO)
    assert [c.sid for c in to_first] == [sids[2], sids[0]]  # newest first
    done = await asyncio.to_thread(client.calls.list, status="completed")
    assert [c.sid for c in done] == [sids[1]]
    # page_size=1: the SDK follows next_page_uri through three pages
    every = await asyncio.to_thread(client.calls.list, page_size=1)
    assert [c.sid for c in every] == sids[::-1]
    page = await asyncio.to_thread(client.calls.page, page_size=2)
    assert page.next_page_url is not None and page.next_page_url.startswith(emu.base_url)
    assert page.previous_page_url is None
    assert len(list(page)) == 2
    assert await asyncio.to_thread(client.calls.list, parent_call_sid="CA" + "0" * 32) == []
    today = datetime.now(UTC)
    ended_today = await asyncio.to_thread(client.calls.list, end_time=today)
    assert [c.sid for c in ended_today] == [sids[1]]
    since = await asyncio.to_thread(client.calls.list, start_time_after=today - timedelta(days=1))
    assert {c.sid for c in since} == set(sids)  # all dialed (start_time) at once
    before = await asyncio.to_thread(client.calls.list, end_time_before=today - timedelta(days=1))
    assert before == []


async def test_cancel_a_ringing_call_and_canceled_does_not_touch_live_calls() -> None:
    async with run_twilio_emulator(
        account_sid="AC" + "2" * 32, auth_token="tok", scenario=scenario_with_slow_number()
    ) as emu:
        client = sdk(emu)
        ringing = await asyncio.to_thread(client.calls.create, to=SLOW, from_=FROM, twiml=HOLD)
        await emu.wait_for_call_status(ringing.sid, "ringing")
        canceled = await asyncio.to_thread(client.calls(ringing.sid).update, status="canceled")
        assert canceled.status == "canceled"
        assert emu.call(ringing.sid).duration == "0"

        live = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
        await emu.wait_for_call_status(live.sid, "in-progress")
        same = await asyncio.to_thread(client.calls(live.sid).update, status="canceled")
        assert same.status == "in-progress"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"to": "12345", "from_": FROM, "twiml": HOLD}, 400, 21211),
        ({"to": "+1555", "from_": FROM, "twiml": HOLD}, 400, 21211),
        ({"to": TO, "from_": "nope", "twiml": HOLD}, 400, 21212),
        ({"to": TO, "from_": FROM}, 400, 21205),
        ({"to": TO, "from_": FROM, "url": "ftp://x/y"}, 400, 21205),
        ({"to": TO, "from_": FROM, "twiml": "x" * 4001}, 400, 20001),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "machine_detection": "Maybe"}, 400, 20001),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "status_callback_event": ["x"]}, 400, 20001),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "timeout": 0}, 400, 20001),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "time_limit": 0}, 400, 20001),
        # callback methods are GET or POST
        ({"to": TO, "from_": FROM, "twiml": HOLD, "status_callback_method": "PUT"}, 400, 20001),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "fallback_method": "PUT"}, 400, 20001),
        (
            {"to": TO, "from_": FROM, "twiml": HOLD, "async_amd_status_callback_method": "PUT"},
            400,
            20001,
        ),
        # callback URLs must be absolute http(s) URLs (protocols.md 2.7: 21205)
        ({"to": TO, "from_": FROM, "twiml": HOLD, "status_callback": "/hook/status"}, 400, 21205),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "status_callback": "http:/hook"}, 400, 21205),
        ({"to": TO, "from_": FROM, "twiml": HOLD, "fallback_url": "ftp://x/y"}, 400, 21205),
        (
            {
                "to": TO,
                "from_": FROM,
                "twiml": HOLD,
                "machine_detection": "Enable",
                "async_amd": "true",
                "async_amd_status_callback": "hook/amd",
            },
            400,
            21205,
        ),
    ],
)
async def test_create_errors_map_to_twilio_rest_exception(
    emu: TwilioEmulator, kwargs: dict[str, object], status: int, code: int
) -> None:
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(sdk(emu).calls.create, **kwargs)
    assert (info.value.status, info.value.code) == (status, code)
    assert emu.calls == {}


async def test_auth_not_found_and_not_modifiable(emu: TwilioEmulator) -> None:
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(sdk(emu, token="wrong").calls.create, to=TO, from_=FROM, twiml=HOLD)
    assert (info.value.status, info.value.code) == (401, 20003)
    client = sdk(emu)
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.calls("CA" + "0" * 32).fetch)
    assert (info.value.status, info.value.code) == (404, 20404)
    call = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.calls(call.sid).update, status="busy")
    assert info.value.code == 20001
    await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    for change in ({"status": "completed"}, {"twiml": HOLD}):
        with pytest.raises(TwilioRestException) as info:
            await asyncio.to_thread(client.calls(call.sid).update, **change)
        assert (info.value.status, info.value.code) == (400, 21220)


async def test_create_limits_at_their_bounds(emu: TwilioEmulator) -> None:
    client = sdk(emu)
    longest = HOLD.ljust(4000)  # "Max 4000 characters" (protocols.md 2.2)
    call = await asyncio.to_thread(
        client.calls.create, to=TO, from_=FROM, twiml=longest, timeout=601, time_limit=10**6
    )
    assert emu.call(call.sid).param("Twiml") == longest
    plan = emu.exchange.sessions[call.sid].machine.plan
    assert (plan.timeout_s, plan.time_limit_s) == (600, 4 * 3600)  # capped at the maxima


async def test_update_refuses_url_with_twiml_and_a_method_other_than_get_or_post(
    emu: TwilioEmulator,
) -> None:
    client = sdk(emu)
    call = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
    await emu.wait_for_call_status(call.sid, "in-progress")
    both = {"url": "http://127.0.0.1:9/twiml", "twiml": HOLD}  # "mutually exclusive" (2.3)
    for change in (both, {"status_callback_method": "PUT"}):
        with pytest.raises(TwilioRestException) as info:
            await asyncio.to_thread(client.calls(call.sid).update, **change)
        assert (info.value.status, info.value.code) == (400, 20001)
    assert emu.call(call.sid).status.value == "in-progress"


async def test_update_with_a_bad_status_callback_is_refused_before_it_acts(
    emu: TwilioEmulator,
) -> None:
    client = sdk(emu)
    call = await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
    await emu.wait_for_call_status(call.sid, "in-progress")
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(
            client.calls(call.sid).update, status="completed", status_callback="/hook/status"
        )
    assert (info.value.status, info.value.code) == (400, 21205)
    assert "StatusCallback" in info.value.msg
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.status == "in-progress"  # the hang-up in the refused request did not happen


async def test_throttling_gives_20429() -> None:
    async with run_twilio_emulator(
        account_sid="AC" + "3" * 32, auth_token="tok", throttle_429_every=2
    ) as emu:
        client = sdk(emu)
        await asyncio.to_thread(client.calls.list)
        with pytest.raises(TwilioRestException) as info:
            await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
        assert (info.value.status, info.value.code) == (429, 20429)
        assert emu.calls == {}  # "never processed": safe to retry
        await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
        assert len(emu.calls) == 1


async def test_calls_over_the_cps_limit_are_queued_not_rejected() -> None:
    scenario = parse_scenario({"numbers": {"default": {"answer_after_s": 0.05}}})
    async with run_twilio_emulator(
        account_sid="AC" + "4" * 32, auth_token="tok", cps=2, scenario=scenario
    ) as emu:
        client = sdk(emu)
        calls, asked = [], []
        for _ in range(3):
            asked.append(time.monotonic())
            calls.append(
                await asyncio.to_thread(client.calls.create, to=TO, from_=FROM, twiml=HOLD)
            )
        assert [c.status for c in calls] == ["queued"] * 3
        queue_times = [int(c.queue_time) for c in calls]
        assert queue_times[0] < queue_times[1] < queue_times[2]
        # The third waits 2 slots of 500 ms from the first, less the time between the two.
        apart_ms = (asked[2] - asked[0]) * 1000
        assert queue_times[2] >= 1000 - apart_ms - 20
        for call in calls:
            await emu.wait_for_call_status(call.sid, "in-progress")
        dialed = [
            next(t.at for t in emu.call(c.sid).transitions if t.event is CallEvent.DIALED)
            for c in calls
        ]
        gaps = [b - a for a, b in itertools.pairwise(dialed)]
        assert all(gap == pytest.approx(0.5, abs=1e-6) for gap in gaps)


async def test_bad_requests_get_twilio_errors_never_a_crash(emu: TwilioEmulator) -> None:
    import httpx

    sid, token = emu.config.account_sid, emu.config.auth_token
    base = f"/2010-04-01/Accounts/{sid}"
    async with httpx.AsyncClient(base_url=emu.base_url, auth=(sid, token)) as http:
        nowhere = await http.get("/nowhere")
        assert (nowhere.status_code, nowhere.json()["code"]) == (404, 20404)
        other = await http.get(f"/2010-04-01/Accounts/AC{'9' * 32}/Calls.json")
        assert other.status_code == 404
        put = await http.put(f"{base}/Calls.json")
        assert (put.status_code, put.json()["code"]) == (405, 20004)
        junk = await http.post(f"{base}/Calls.json", content=b"\xff\xfe=%%%&&To")
        assert (junk.status_code, junk.json()["code"]) == (400, 21201)
        no_auth = await http.get(f"{base}/Calls.json", auth=None)
        assert no_auth.status_code == 401
        assert no_auth.headers["www-authenticate"].startswith("Basic")
        bad_size = await http.get(f"{base}/Calls.json", params={"PageSize": "lots"})
        assert bad_size.status_code == 400
        created = await http.post(
            f"{base}/Calls.json", data={"To": TO, "From": FROM, "Twiml": HOLD}
        )
        call = f"{base}/Calls/{created.json()['sid']}.json"
        assert (await http.delete(call)).json()["code"] == 21220  # still queued/ringing
        await http.post(call, data={"Status": "canceled"})
        assert (await http.delete(call)).status_code == 204
        assert (await http.get(call)).status_code == 404
        json_body = await http.post(f"{base}/Calls.json", json={"To": TO})
        assert json_body.status_code == 400
