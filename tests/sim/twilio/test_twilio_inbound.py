"""Inbound calls: IncomingPhoneNumbers through the real twilio SDK, and a PSTN caller
dialing one (``TwilioEmulator.ring_in``): the signed voice webhook, the TwiML it
answers, the Call resource and the number's status callback.
"""

from __future__ import annotations

import asyncio
import base64
import re
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from sim.scenario import parse_scenario
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator
from sim.twilio.calls import CallEvent, CallMachine, CallPlan, CallStatus
from sim.twilio.numbers import InboundCallRefused
from sim.twilio.probe_app import ProbeApp, stream_twiml
from sim.twilio.twiml import Hangup, parse_twiml
from switchboard.errors import ConfigError

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"
NUMBER, OTHER, CALLER = "+15551230004", "+15551239999", "+15005550006"
SAY = "<Response><Say>Hello</Say></Response>"
HOLD = '<Response><Pause length="30"/></Response>'


def sdk(emu: TwilioEmulator) -> Client:
    client = Client(emu.config.account_sid, emu.config.auth_token, environment={})
    client.api.base_url = emu.base_url
    return client


async def provision(emu: TwilioEmulator, number: str = NUMBER, **kwargs: object) -> str:
    created = await asyncio.to_thread(
        sdk(emu).incoming_phone_numbers.create, phone_number=number, **kwargs
    )
    return str(created.sid)


# -- the resource ----------------------------------------------------------------------


async def test_a_number_is_created_fetched_updated_listed_and_deleted(emu: TwilioEmulator) -> None:
    client = sdk(emu)
    numbers = client.incoming_phone_numbers
    created = await asyncio.to_thread(
        numbers.create,
        phone_number=NUMBER,
        voice_url="https://app.example/twilio/voice",
        voice_method="POST",
        status_callback="https://app.example/status",
        status_callback_method="GET",
    )
    assert re.fullmatch(r"PN[0-9a-f]{32}", created.sid)
    assert (created.phone_number, created.friendly_name) == (NUMBER, "(555) 123-0004")
    assert (created.voice_url, created.voice_method) == ("https://app.example/twilio/voice", "POST")
    assert (created.status_callback, created.status_callback_method) == (
        "https://app.example/status",
        "GET",
    )
    assert created.voice_fallback_url is None and created.capabilities["voice"] is True
    assert (created.account_sid, created.api_version) == (ACCOUNT_SID, "2010-04-01")
    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers"
    assert created.uri == f"{base}/{created.sid}.json"
    assert created.date_created is not None and created.date_created.tzinfo is not None

    fetched = await asyncio.to_thread(numbers(created.sid).fetch)
    assert fetched.voice_url == created.voice_url
    updated = await asyncio.to_thread(
        numbers(created.sid).update,
        voice_url="https://other.example/voice",
        voice_method="GET",
        friendly_name="Front desk",
        status_callback="",
    )
    assert (updated.voice_url, updated.voice_method) == ("https://other.example/voice", "GET")
    assert (updated.friendly_name, updated.status_callback) == ("Front desk", "")
    assert updated.phone_number == NUMBER  # not changeable

    second = await provision(emu, OTHER)
    listed = await asyncio.to_thread(numbers.list)
    assert [n.sid for n in listed] == [created.sid, second]
    by_number = await asyncio.to_thread(numbers.list, phone_number="123*004")
    assert [n.sid for n in by_number] == [created.sid]
    by_name = await asyncio.to_thread(numbers.list, friendly_name="Front desk")
    assert [n.sid for n in by_name] == [created.sid]
    paged = await asyncio.to_thread(numbers.list, page_size=1)  # the SDK follows next_page_uri
    assert [n.sid for n in paged] == [created.sid, second]

    assert await asyncio.to_thread(numbers(created.sid).delete) is True
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(numbers(created.sid).fetch)
    assert (info.value.status, info.value.code) == (404, 20404)
    assert [n.sid for n in await asyncio.to_thread(numbers.list)] == [second]


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"voice_url": "https://app.example/voice"}, 21421, "PhoneNumber"),
        ({"phone_number": "5551230004"}, 21421, "PhoneNumber is invalid"),
        ({"phone_number": "client:alice"}, 21421, "PhoneNumber is invalid"),
        ({"phone_number": NUMBER, "voice_url": "ftp://app.example/voice"}, 21205, "VoiceUrl"),
        ({"phone_number": NUMBER, "voice_url": "not a url"}, 21205, "VoiceUrl"),
        ({"phone_number": NUMBER, "status_callback": "/relative"}, 21205, "StatusCallback"),
        ({"phone_number": NUMBER, "voice_method": "PUT"}, 20001, "VoiceMethod"),
        ({"phone_number": NUMBER, "voice_application_sid": "AP" + "0" * 32}, 20001, "not emulated"),
        ({"phone_number": NUMBER, "friendly_name": "x" * 65}, 20001, "64"),
        ({"area_code": "555"}, 20001, "AreaCode"),
    ],
)
async def test_bad_number_input_is_refused_like_twilio(
    emu: TwilioEmulator, kwargs: dict[str, str], code: int, words: str
) -> None:
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(sdk(emu).incoming_phone_numbers.create, **kwargs)
    assert (info.value.status, info.value.code) == (400, code)
    assert words in info.value.msg
    assert emu.exchange.numbers == {}


async def test_a_number_is_owned_once_and_a_bad_update_changes_nothing(
    emu: TwilioEmulator,
) -> None:
    sid = await provision(emu, voice_url="https://app.example/voice")
    numbers = sdk(emu).incoming_phone_numbers
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(numbers.create, phone_number=NUMBER)
    assert (info.value.status, info.value.code) == (400, 21422)
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(
            numbers(sid).update, voice_url="https://new.example/voice", voice_method="PUT"
        )
    assert (info.value.status, info.value.code) == (400, 20001)
    assert (await asyncio.to_thread(numbers(sid).fetch)).voice_url == "https://app.example/voice"
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(numbers("PN" + "0" * 32).update, voice_url="https://x.example/")
    assert (info.value.status, info.value.code) == (404, 20404)


# -- a caller dials a number -----------------------------------------------------------


async def test_an_inbound_call_is_answered_by_the_numbers_voice_url(
    app: ProbeApp, tmp_path: Path
) -> None:
    (tmp_path / "hello.ulaw").write_bytes(b"\x10" * 800)  # 100 ms
    (tmp_path / "thanks.ulaw").write_bytes(b"\x20" * 800)
    scenario = parse_scenario(
        {
            "numbers": {"default": {"answer_after_s": 0.05}},
            "caller": [
                {"say": "hello", "clip": "hello.ulaw", "at_ms": 0},
                {"say": "thanks", "clip": "thanks.ulaw", "after_agent_ms": 100},
                {"hangup": True, "after_agent_ms": 0},
            ],
        },
        base_dir=tmp_path,
    )
    app.twiml["in"] = stream_twiml(app.ws_url, params={"who": "inbound"})
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario
    ) as emu:
        number_sid = await provision(emu, voice_url=f"{app.base_url}/twiml/in")
        sid = emu.ring_in(NUMBER, CALLER)
        (hit,) = await app.wait_hits("/twiml/in", 1)
        session = await app.next_session()
        start = await session.next("start")
        ms = str(start["streamSid"])

        async def until_speech(byte: int) -> None:
            while True:
                m = await session.next("media")
                if base64.b64decode(m["media"]["payload"])[0] == byte:  # type: ignore[index]
                    return

        await until_speech(0x10)  # the caller speaks first: "hello"
        greeting = base64.b64encode(b"\x30" * 1600).decode()  # the agent's 200 ms greeting
        await session.send({"event": "media", "streamSid": ms, "media": {"payload": greeting}})
        await until_speech(0x20)  # the caller answers it once it has played
        await session.send({"event": "media", "streamSid": ms, "media": {"payload": greeting}})
        await session.next("stop")  # then hangs up
        call = await emu.wait_for_call_status(sid, "completed")
        resource = await asyncio.to_thread(sdk(emu).calls(sid).fetch)

    assert hit.valid and hit.method == "POST"
    params = hit.params
    assert (params["CallSid"], params["AccountSid"], params["ApiVersion"]) == (
        sid,
        ACCOUNT_SID,
        "2010-04-01",
    )
    assert (params["Direction"], params["CallStatus"]) == ("inbound", "ringing")
    assert (params["To"], params["Called"], params["From"], params["Caller"]) == (
        NUMBER,
        NUMBER,
        CALLER,
        CALLER,
    )
    assert (params["ToCountry"], params["FromCountry"]) == ("US", "US")
    assert params["CallToken"]
    assert start["start"]["callSid"] == sid  # type: ignore[index]
    assert start["start"]["customParameters"] == {"who": "inbound"}  # type: ignore[index]
    assert [label for _, label in call.streams[0].said] == ["hello", "thanks"]
    assert [item.end_ms - item.start_ms for item in call.heard.items] == [200, 200]
    assert (call.direction, call.phone_number_sid, call.end_reason) == (
        "inbound",
        number_sid,
        "caller",
    )
    assert [t.event for t in call.transitions] == [
        CallEvent.DIALED,
        CallEvent.RANG,
        CallEvent.ANSWERED,
        CallEvent.HUNG_UP,
    ]
    assert (resource.direction, resource.status, resource.phone_number_sid) == (
        "inbound",
        "completed",
        number_sid,
    )
    assert (resource.to, resource._from, resource.queue_time) == (NUMBER, CALLER, "0")


async def test_status_callbacks_go_to_the_numbers_callback(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    app.twiml["say"] = SAY
    await provision(
        emu,
        voice_url=f"{app.base_url}/twiml/say",
        status_callback=f"{app.base_url}/hook/status",
    )
    sid = emu.ring_in(NUMBER, CALLER)
    await emu.wait_for_call_status(sid, "completed")
    (hit,) = await app.wait_hits("/hook/status", 1)  # the end only, as for a number
    assert hit.valid and hit.method == "POST"
    p = hit.params
    assert (p["CallSid"], p["CallStatus"], p["Direction"]) == (sid, "completed", "inbound")
    assert (p["To"], p["From"], p["SequenceNumber"]) == (NUMBER, CALLER, "0")
    assert p["CallDuration"] == emu.call(sid).duration
    assert [i.source for i in emu.call(sid).heard.items] == ["say"]


async def test_a_status_callback_by_get_and_a_fallback_url(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    app.twiml["say"] = SAY
    await provision(
        emu,
        voice_url=f"{app.base_url}/twiml/missing",  # 404
        voice_fallback_url=f"{app.base_url}/twiml/say",
        status_callback=f"{app.base_url}/hook/status",
        status_callback_method="GET",
    )
    sid = emu.ring_in(NUMBER, CALLER)
    await emu.wait_for_call_status(sid, "completed")
    (fallback,) = await app.wait_hits("/twiml/say", 1)
    assert fallback.valid and fallback.params["ErrorCode"] == "11200"
    assert fallback.params["CallStatus"] == "ringing"
    (hit,) = await app.wait_hits("/hook/status", 1)
    assert hit.method == "GET" and hit.valid and hit.params["Direction"] == "inbound"


@pytest.mark.parametrize(("reason", "status"), [("busy", "busy"), ("rejected", "no-answer")])
async def test_reject_first_leaves_the_call_unanswered(
    app: ProbeApp, emu: TwilioEmulator, reason: str, status: str
) -> None:
    app.twiml["reject"] = f'<Response><Reject reason="{reason}"/><Say>never</Say></Response>'
    await provision(emu, voice_url=f"{app.base_url}/twiml/reject")
    sid = emu.ring_in(NUMBER, CALLER)
    call = await emu.wait_for_call_status(sid, status)
    assert call.answered_time is None and call.duration == "0" and not call.heard.items
    assert call.end_reason == "rejected" and not call.streams


async def test_a_voice_url_that_cannot_be_fetched_fails_the_ringing_call(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    await provision(emu, voice_url=f"{app.base_url}/twiml/missing")
    sid = emu.ring_in(NUMBER, CALLER)
    call = await emu.wait_for_call_status(sid, "failed")
    assert call.answered_time is None and call.error_code == 11200
    assert [n.code for n in call.notifications] == [11200]


async def test_the_api_hangs_up_an_inbound_call(app: ProbeApp, emu: TwilioEmulator) -> None:
    app.twiml["hold"] = HOLD
    await provision(emu, voice_url=f"{app.base_url}/twiml/hold")
    sid = emu.ring_in(NUMBER, CALLER)
    await emu.wait_for_call_status(sid, "in-progress")
    hung = await asyncio.to_thread(sdk(emu).calls(sid).update, status="completed")
    assert (hung.status, hung.direction) == ("completed", "inbound")
    listed = await asyncio.to_thread(sdk(emu).calls.list, to=NUMBER)
    assert [c.sid for c in listed] == [sid]


async def test_a_caller_who_hangs_up_while_it_rings_leaves_a_no_answer(
    emu: TwilioEmulator,
) -> None:
    # The app is slow to answer the voice URL; the caller gives up first.
    asked = asyncio.Event()

    async def slow_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        asked.set()
        await reader.read()  # never answers: the emulator drops the request
        writer.close()

    server = await asyncio.start_server(slow_app, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await provision(emu, voice_url=f"http://127.0.0.1:{port}/voice")
        sid = emu.ring_in(NUMBER, CALLER)
        await asyncio.wait_for(asked.wait(), 10)
        emu.hang_up(sid)
        call = await emu.wait_for_call_status(sid, "no-answer")
    finally:
        server.close()
    assert (call.answered_time, call.end_reason) == (None, "caller")
    assert call.streams == [] and call.notifications == []


async def test_a_call_to_a_number_not_configured_is_refused(emu: TwilioEmulator) -> None:
    with pytest.raises(InboundCallRefused, match=r"\+15551230004 is not one of account AC1+"):
        emu.ring_in(NUMBER, CALLER)
    sid = await provision(emu)  # no voice_url
    with pytest.raises(InboundCallRefused, match="has no voice_url"):
        emu.ring_in(NUMBER, CALLER)
    await asyncio.to_thread(
        sdk(emu).incoming_phone_numbers(sid).update, voice_url="https://app.example/voice"
    )
    with pytest.raises(InboundCallRefused, match=r"is not an E\.164 number"):
        emu.ring_in(NUMBER, "anonymous")
    await asyncio.to_thread(sdk(emu).incoming_phone_numbers(sid).delete)
    with pytest.raises(ConfigError, match="is not one of"):
        emu.ring_in(NUMBER, CALLER)
    assert emu.calls == {}


# -- the pure parts --------------------------------------------------------------------


def test_an_inbound_machine_rings_at_once_and_waits_for_its_twiml() -> None:
    machine = CallMachine(CallPlan(inbound=True), dial_at=5.0)
    assert [t.event for t in machine.tick(5.0)] == [CallEvent.DIALED, CallEvent.RANG]
    assert machine.status is CallStatus.RINGING and machine.next_deadline is None
    assert machine.answer(5.2).after is CallStatus.IN_PROGRESS and machine.answered_at == 5.2
    for busy, status in ((True, CallStatus.BUSY), (False, CallStatus.NO_ANSWER)):
        rejecting = CallMachine(CallPlan(inbound=True), dial_at=0.0)
        rejecting.tick(0.0)
        assert rejecting.reject(0.1, busy).after is status
        assert rejecting.end_reason == "rejected" and rejecting.answered_at is None
    failing = CallMachine(CallPlan(inbound=True), dial_at=0.0)
    failing.tick(0.0)
    assert failing.fail(0.1, "twiml-error-11200").after is CallStatus.FAILED


def test_reject_keeps_its_reason() -> None:
    assert parse_twiml('<Response><Reject reason="busy"/></Response>') == (Hangup("busy"),)
    assert parse_twiml("<Response><Reject/></Response>") == (Hangup("rejected"),)
    assert parse_twiml("<Response><Hangup/></Response>") == (Hangup(),)
