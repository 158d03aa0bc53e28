"""Signed webhooks: status callbacks, AMD, TwiML fetches, stream status; call outcomes.

Every request the emulator makes is checked by the probe app with twilio's own
``RequestValidator`` (``Hit.valid``).
"""

from __future__ import annotations

import asyncio
from email.utils import parsedate_to_datetime

import pytest
from twilio.rest import Client

from sim.scenario import Scenario, parse_scenario
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator
from sim.twilio.amd import load_greeting, machine_audio
from sim.twilio.callbacks import Lane
from sim.twilio.probe_app import ProbeApp, stream_twiml

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"
TO, FROM = "+15551230000", "+15559870000"
BUSY, NOBODY, BROKEN, MACHINE = "+15550000002", "+15550000003", "+15550000004", "+15550000005"
SAY = "<Response><Say>Hello</Say></Response>"
HOLD = '<Response><Pause length="30"/></Response>'
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def scenario(**extra: object) -> Scenario:
    numbers: dict[str, object] = {
        "default": {"answer_after_s": 0.05},
        BUSY: {"outcome": "busy", "answer_after_s": 0.05},
        NOBODY: {"outcome": "no-answer"},
        BROKEN: {"outcome": "failed", "answer_after_s": 0.05},
        MACHINE: {"outcome": "voicemail", "answer_after_s": 0.05},
    }
    return parse_scenario({"numbers": numbers, **extra})


def sdk(emu: TwilioEmulator) -> Client:
    client = Client(emu.config.account_sid, emu.config.auth_token, environment={})
    client.api.base_url = emu.base_url
    return client


async def create(emu: TwilioEmulator, **kwargs: object) -> str:
    kwargs.setdefault("to", TO)
    kwargs.setdefault("from_", FROM)
    call = await asyncio.to_thread(sdk(emu).calls.create, **kwargs)
    return str(call.sid)


async def test_status_callbacks_are_signed_ordered_and_complete(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        sid = await create(
            emu,
            twiml=SAY,
            status_callback=f"{app.base_url}/hook/status",
            status_callback_event=ALL_EVENTS,
        )
        hits = await app.wait_hits("/hook/status", 4)
        await emu.wait_for_call_status(sid, "completed")
    assert all(h.valid for h in hits)
    params = [h.params for h in hits]
    assert [p["CallStatus"] for p in params] == ["initiated", "ringing", "in-progress", "completed"]
    assert [p["SequenceNumber"] for p in params] == ["0", "1", "2", "3"]
    for p in params:
        assert (p["CallSid"], p["AccountSid"], p["To"], p["From"]) == (sid, ACCOUNT_SID, TO, FROM)
        assert (p["Direction"], p["ApiVersion"]) == ("outbound-api", "2010-04-01")
        assert p["CallbackSource"] == "call-progress-events"
        assert parsedate_to_datetime(p["Timestamp"]).tzinfo is not None
        assert (p["Called"], p["Caller"], p["ToCountry"]) == (TO, FROM, "US")
    assert "CallDuration" not in params[2]
    assert params[3]["CallDuration"] == params[3]["Duration"] == emu.call(sid).duration
    assert params[3]["SipResponseCode"] == "200"
    assert emu.call(sid).end_reason == "twiml-ended"
    assert [i.source for i in emu.call(sid).heard.items] == ["say"]


@pytest.mark.parametrize("ordered", [True, False])
async def test_a_slow_callback_holds_up_the_next_only_when_ordered(ordered: bool) -> None:
    # Twilio sends each callback as its own request (protocols.md 2.5): one slow answer
    # holds up no other, and they may arrive out of order. The processes the integration
    # tests and `make run` use send them so; in order, one at a time, on request.
    lane, answered, seen = Lane(ordered=ordered), asyncio.Event(), []

    async def slow() -> None:
        await answered.wait()
        seen.append("initiated")

    async def fast() -> None:
        seen.append("ringing")

    lane.submit(slow)
    lane.submit(fast)
    for _ in range(20):  # let the lane run all it may, no clock involved
        await asyncio.sleep(0)
    assert seen == ([] if ordered else ["ringing"])
    answered.set()
    await lane.drain()
    assert seen == (["initiated", "ringing"] if ordered else ["ringing", "initiated"])


async def test_only_completed_by_default_and_get_method(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        sid = await create(
            emu,
            twiml=SAY,
            status_callback=f"{app.base_url}/hook/status?tag=1",
            status_callback_method="GET",
        )
        await emu.wait_for_call_status(sid, "completed")
        await emu.wait_until(lambda: len(emu.call(sid).callbacks) == 1)
    (hit,) = await app.wait_hits("/hook/status", 1)
    assert hit.method == "GET" and hit.valid
    assert hit.params["CallStatus"] == "completed" and hit.params["tag"] == "1"
    assert hit.params["SequenceNumber"] == "0"


async def test_unanswered_outcomes_report_their_final_status(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        sids = {}
        for number, name in ((BUSY, "busy"), (NOBODY, "noanswer"), (BROKEN, "failed")):
            sids[name] = await create(
                emu,
                to=number,
                twiml=SAY,
                timeout=1,
                status_callback=f"{app.base_url}/hook/{name}",
                status_callback_event=ALL_EVENTS,
            )
        for name, status in (("busy", "busy"), ("noanswer", "no-answer"), ("failed", "failed")):
            await emu.wait_for_call_status(sids[name], status, timeout=5)
        busy = await app.wait_hits("/hook/busy", 3)
        nobody = await app.wait_hits("/hook/noanswer", 3)
        failed = await app.wait_hits("/hook/failed", 2)
    assert [h.params["CallStatus"] for h in busy] == ["initiated", "ringing", "busy"]
    assert [h.params["CallStatus"] for h in nobody] == ["initiated", "ringing", "no-answer"]
    assert [h.params["CallStatus"] for h in failed] == ["initiated", "failed"]
    assert [h.params["SipResponseCode"] for h in (busy[-1], nobody[-1], failed[-1])] == [
        "486",
        "487",
        "500",
    ]
    assert all(h.valid for h in busy + nobody + failed)
    assert all(h.params["CallDuration"] == "0" for h in (busy[-1], nobody[-1], failed[-1]))
    assert emu.call(sids["noanswer"]).end_reason == "timeout"


async def test_async_amd_callback_for_voicemail(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario(), default_caller=False
    ) as emu:
        sid = await create(
            emu,
            to=MACHINE,
            twiml=stream_twiml(app.ws_url),
            machine_detection="DetectMessageEnd",
            async_amd="true",
            async_amd_status_callback=f"{app.base_url}/hook/amd",
        )
        session = await app.next_session()
        (hit,) = await app.wait_hits("/hook/amd", 1)
        call = emu.call(sid)
        greeting_and_beep = machine_audio("machine_end_beep", load_greeting())
        assert hit.valid
        assert hit.params == {
            "AccountSid": ACCOUNT_SID,
            "CallSid": sid,
            "AnsweredBy": "machine_end_beep",
            "MachineDetectionDuration": str(len(greeting_and_beep) // 8),
        }
        assert call.async_amd_raw == "true" and call.answered_by == "machine_end_beep"
        # The stream started after the answer: the app got the greeting from where the
        # stream's first frame slot fell (less what played before it opened), then the beep.
        stream = call.streams[0]
        await emu.wait_until(lambda: stream.started_ms is not None)
        assert stream.started_ms is not None
        opened = int(stream.started_ms * 8)
        tail = len(greeting_and_beep) - opened - 161
        await emu.wait_until(lambda: len(stream.sent_audio) >= tail)
        sent = bytes(stream.sent_audio)
        cuts = [
            skipped
            for skipped in range(opened, opened + 162)  # cut at the first frame's slot
            if sent.startswith(greeting_and_beep[skipped:])
        ]
        assert cuts, f"the greeting from {opened} bytes on is not what the app got"
        session.close()


async def test_async_amd_true_is_recorded_raw(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        sid = await create(
            emu,
            twiml=HOLD,
            machine_detection="Enable",
            machine_detection_timeout=1,
            async_amd=True,  # the SDK sends "True" (protocols.md 2.6)
            async_amd_status_callback=f"{app.base_url}/hook/amd",
        )
        (hit,) = await app.wait_hits("/hook/amd", 1)
        await asyncio.to_thread(sdk(emu).calls(sid).update, status="completed")
    assert emu.call(sid).async_amd_raw == "True"
    # the human's greeting + 1200 ms of silence outlast a 1 s timeout: undecided
    assert (hit.params["AnsweredBy"], hit.params["MachineDetectionDuration"]) == ("unknown", "1000")


async def test_send_digits_turns_sync_amd_off(app: ProbeApp) -> None:
    # "If send_digits is provided, machine_detection is ignored" (protocols.md 2.2)
    app.twiml["main"] = "<Response><Hangup/></Response>"
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        sid = await create(
            emu, url=f"{app.base_url}/twiml/main", machine_detection="Enable", send_digits="1"
        )
        await emu.wait_for_call_status(sid, "completed")
        fetched = await asyncio.to_thread(sdk(emu).calls(sid).fetch)
    (fetch,) = app.hits_for("/twiml/main")
    assert fetch.valid and "AnsweredBy" not in fetch.params
    assert "MachineDetectionDuration" not in fetch.params
    assert fetched.answered_by is None and emu.call(sid).answered_by is None
    assert [item.source for item in emu.call(sid).heard.items] == ["digits"]


async def test_send_digits_turns_async_amd_off(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        sid = await create(
            emu,
            twiml='<Response><Pause length="1"/></Response>',  # outlasts the 1 s AMD timeout
            machine_detection="Enable",
            machine_detection_timeout=1,
            async_amd="true",
            async_amd_status_callback=f"{app.base_url}/hook/amd",
            send_digits="1",
        )
        await emu.wait_for_call_status(sid, "completed")
    # the emulator has shut down: every callback it was going to make has been made
    assert app.hits_for("/hook/amd") == [] and emu.call(sid).callbacks_of("amd") == []
    assert emu.call(sid).answered_by is None


async def test_sync_amd_adds_answered_by_to_the_twiml_fetch(app: ProbeApp) -> None:
    app.twiml["main"] = stream_twiml(app.ws_url, params={"from": "url"})
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario(), default_caller=False
    ) as emu:
        sid = await create(
            emu,
            url=f"{app.base_url}/twiml/main",
            machine_detection="Enable",
            machine_detection_speech_end_threshold=500,
        )
        session = await app.next_session()
        start = await session.next("start")
        (fetch,) = app.hits_for("/twiml/main")
        assert fetch.valid and fetch.method == "POST"
        assert fetch.params["AnsweredBy"] == "human"
        assert fetch.params["MachineDetectionDuration"] == "1500"
        assert fetch.params["CallStatus"] == "in-progress" and fetch.params["CallSid"] == sid
        assert start["start"]["customParameters"] == {"from": "url"}  # type: ignore[index]
        assert emu.call(sid).answered_by == "human"
        session.close()
        await emu.wait_for_call_status(sid, "completed")


async def test_unfetchable_url_fails_the_call_unless_a_fallback_answers(app: ProbeApp) -> None:
    app.twiml["fallback"] = SAY
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario()
    ) as emu:
        lost = await create(
            emu,
            url=f"{app.base_url}/twiml/missing",
            status_callback=f"{app.base_url}/hook/status",
        )
        rescued = await create(
            emu, url=f"{app.base_url}/twiml/missing", fallback_url=f"{app.base_url}/twiml/fallback"
        )
        await emu.wait_for_call_status(lost, "failed")
        await emu.wait_for_call_status(rescued, "completed")
        (final,) = await app.wait_hits("/hook/status", 1)
    assert final.params["CallStatus"] == "failed"
    assert emu.call(lost).error_code == 11200
    assert [n.code for n in emu.call(lost).notifications] == [11200]
    (fallback,) = app.hits_for("/twiml/fallback")
    assert fallback.valid and fallback.params["ErrorCode"] == "11200"


async def test_malformed_twiml_fails_the_call_with_12100(emu: TwilioEmulator) -> None:
    sid = await create(emu, twiml="<Response><Connect><Stream url='wss://x'></Connect>")
    await emu.wait_for_call_status(sid, "failed")
    call = emu.call(sid)
    assert call.error_code == 12100 and call.notifications[0].code == 12100
    assert call.end_reason == "twiml-error-12100"


async def test_time_limit_ends_the_call_and_the_stream(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid = await create(emu, twiml=stream_twiml(app.ws_url), time_limit=1)
    session = await app.next_session()
    stop = await session.next("stop", timeout=5)
    await emu.wait_for_call_status(sid, "completed")
    assert stop["stop"] == {"accountSid": ACCOUNT_SID, "callSid": sid}  # type: ignore[index]
    assert emu.call(sid).end_reason == "time-limit"
    await asyncio.wait_for(session.closed.wait(), 5)


async def test_stream_status_callbacks(app: ProbeApp, emu: TwilioEmulator) -> None:
    hook = f"{app.base_url}/hook/stream"
    sid = await create(emu, twiml=stream_twiml(app.ws_url, status_callback=hook))
    session = await app.next_session()
    await session.next("start")
    session.close()  # the app ends the stream: no TwiML after </Connect>, so the call ends
    await emu.wait_for_call_status(sid, "completed")
    started, stopped = await app.wait_hits("/hook/stream", 2)
    stream = emu.call(sid).streams[0]
    for hit, event in ((started, "stream-started"), (stopped, "stream-stopped")):
        assert hit.valid
        assert hit.params["StreamEvent"] == event
        assert hit.params["StreamSid"] == hit.params["StreamName"] == stream.stream_sid
        assert hit.params["Timestamp"].endswith("Z")
    assert stream.end_reason == "closed-by-app"


async def test_insecure_stream_url_is_error_31922(app: ProbeApp) -> None:
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        scenario=scenario(),
        allow_insecure_ws=False,
    ) as emu:
        hook = f"{app.base_url}/hook/stream"
        twiml = stream_twiml(app.ws_url, status_callback=hook, extra="<Say>Hello</Say>")
        sid = await create(emu, twiml=twiml)
        (hit,) = await app.wait_hits("/hook/stream", 1)
        await emu.wait_for_call_status(sid, "completed")  # the <Say> after </Connect> still runs
    assert hit.valid and hit.params["StreamEvent"] == "stream-error"
    assert "URL Schema Not Supported" in hit.params["StreamError"]
    call = emu.call(sid)
    assert call.streams[0].error_code == 31922 and call.notifications[0].code == 31922
    assert [i.source for i in call.heard.items] == ["say"]


async def test_redirect_connect_action_dial_and_send_digits(app: ProbeApp) -> None:
    app.twiml["r"] = (
        f'<Response><Gather/><Connect action="{app.base_url}/twiml/after">'
        f'<Stream url="{app.ws_url}"/></Connect></Response>'
    )
    app.twiml["after"] = "<Response><Dial>+15551119999</Dial><Hangup/><Say>never</Say></Response>"
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario(), default_caller=False
    ) as emu:
        redirect = (
            f'<Response><Pause length="0"/><Redirect>{app.base_url}/twiml/r</Redirect></Response>'
        )
        sid = await create(emu, twiml=redirect, send_digits="1w2")
        session = await app.next_session()
        await session.next("start")
        session.close()
        await emu.wait_for_call_status(sid, "completed", timeout=5)
    fetches = [h for h in app.hits if h.path.startswith("/twiml/")]
    assert [h.path for h in fetches] == ["/twiml/r", "/twiml/after"]
    assert all(h.valid and h.params["CallSid"] == sid for h in fetches)
    call = emu.call(sid)
    assert [i.source for i in call.heard.items] == ["digits"]  # SendDigits, heard first
    assert call.heard.items[0].end_ms - call.heard.items[0].start_ms == 900  # 1, w, 2
    assert [n.code for n in call.notifications] == [12200]  # <Gather> is not emulated
    assert call.end_reason == "twiml-ended" and call.streams[0].end_reason == "closed-by-app"


async def test_update_with_a_url_fetches_and_follows_it(app: ProbeApp, emu: TwilioEmulator) -> None:
    app.twiml["transfer"] = "<Response><Say>Transferring</Say></Response>"
    sid = await create(emu, twiml=stream_twiml(app.ws_url))
    session = await app.next_session()
    await session.next("media")
    await asyncio.to_thread(
        sdk(emu).calls(sid).update, url=f"{app.base_url}/twiml/transfer", method="GET"
    )
    await session.next("stop")
    await emu.wait_for_call_status(sid, "completed")
    (fetch,) = app.hits_for("/twiml/transfer")
    assert fetch.method == "GET" and fetch.valid and fetch.params["CallStatus"] == "in-progress"
    assert [i.source for i in emu.call(sid).heard.items] == ["say"]


async def test_callee_hangs_up_after_its_scripted_time(app: ProbeApp) -> None:
    quick = "+15550000009"
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        scenario=parse_scenario(
            {"numbers": {quick: {"answer_after_s": 0.05, "hangup_after_s": 0.3}}}
        ),
        default_caller=False,
    ) as emu:
        sid = await create(emu, to=quick, twiml=stream_twiml(app.ws_url))
        session = await app.next_session()
        stop = await session.next("stop")
        await emu.wait_for_call_status(sid, "completed")
    call = emu.call(sid)
    assert stop["stop"]["callSid"] == sid  # type: ignore[index]
    assert call.end_reason == "caller" and call.streams[0].end_reason == "stopped"
    answered, ended = (t.at for t in call.transitions if t.event.value in ("answered", "hung-up"))
    assert ended - answered == pytest.approx(0.3)  # the machine's schedule, not wall-clock
