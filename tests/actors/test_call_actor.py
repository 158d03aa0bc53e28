"""The call actor as a plain object, against both emulators and the real SDKs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from pydantic import SecretStr
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse
from websockets.typing import Subprotocol

from actors import call_actor
from actors.call_actor import CallActor, CallPlan
from actors.twilio_rest import end_call
from sim.scenario import Scenario, parse_scenario
from sim.testing_realtime import RunningRealtimeEmulator, run_realtime_emulator
from sim.testing_twilio import run_twilio_emulator
from switchboard.call_actions import (
    Action,
    AgentTranscriptGrew,
    AgentTurnFinished,
    CallerTurnTranscribed,
    CallStatusChanged,
    FinishCall,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
)
from switchboard.errors import CallCanceled, LocalProtocolError, RealtimeServiceError
from switchboard.settings import Settings

ACCOUNT = "AC" + "e" * 32
TOKEN = "twilio-auth-token-for-tests"
SCENARIO = parse_scenario(
    {
        "caller": [
            {"say": "Hello? Who is this?", "clip": "caller_hello.ulaw", "after_agent_ms": 200},
            {"hangup": True, "after_agent_ms": 300},
        ],
        "assistant": [
            {
                "say": "Hello! This is Ava calling from Bright Smiles Dental.",
                "clip": "agent_greeting.ulaw",
            },
            {"say": "Sure, I can help with that.", "clip": "agent_reply_short.ulaw"},
        ],
    }
)


@dataclass
class Recorder:
    batches: list[list[tuple[Action, float]]] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    seqs: list[int | None] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    refusals: int = 0  # reports to refuse, as a restarting recorder does

    async def report(
        self,
        call_id: str,
        batch: list[tuple[Action, float]],
        seq: int | None = None,
        sender: str = "",
    ) -> None:
        if self.refusals:
            self.refusals -= 1
            raise ConnectionError("the recorder is restarting")
        self.batches.append(batch)
        self.call_ids.append(call_id)
        self.seqs.append(seq)
        self.senders.append(sender)

    @property
    def actions(self) -> list[Action]:
        return [action for batch in self.batches for action, _ in batch]


@dataclass
class World:
    twilio: Client
    emulator: object
    realtime: RunningRealtimeEmulator
    settings: Settings
    recorder: Recorder
    ended: list[str]


@contextlib.asynccontextmanager
async def make_world(
    scenario: Scenario = SCENARIO,
    session_max_s: float = 3600.0,
    renew_margin_s: float = 60.0,
    model: str = "gpt-realtime",
    cps: float | None = None,
) -> AsyncIterator[World]:
    limits = {} if cps is None else {"cps": cps}
    async with (
        run_twilio_emulator(
            account_sid=ACCOUNT, auth_token=TOKEN, scenario=scenario, **limits
        ) as tw,
        run_realtime_emulator(
            scenario=scenario, api_key="sk-actor", max_session_s=session_max_s
        ) as rt,
    ):
        client = Client(ACCOUNT, TOKEN, environment={})
        client.api.base_url = tw.base_url
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            twilio_auth_token=TOKEN,
            openai_api_key="sk-actor",
            openai_base_url=rt.base_url,
            # A stack test may have exported PUBLIC_URL for the session's cluster: the
            # signature here is over the URL Twilio dials, the actor's own address.
            public_url=None,
            openai_session_max_s=session_max_s,
            openai_session_renew_margin_s=renew_margin_s,
            openai_realtime_model=model,
        )
        yield World(client, tw, rt, settings, Recorder(), [])


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with make_world() as w:
        yield w


def make_actor(world: World) -> CallActor:
    async def end_via_rest(call_sid: str) -> None:  # as rest_calls (actors/ray_wiring.py)
        world.ended.append(call_sid)
        await end_call(world.twilio, call_sid)

    async def status_via_rest(call_sid: str) -> str | None:
        call = await asyncio.to_thread(world.twilio.calls(call_sid).fetch)
        return str(call.status)

    return CallActor(
        "slot-1", world.settings, world.recorder, end_via_rest, status_via_rest=status_via_rest
    )


def twiml(port: int, call_id: str, token: str) -> str:
    response, connect = VoiceResponse(), Connect()
    stream = connect.stream(url=f"ws://127.0.0.1:{port}/media/{call_id}")
    stream.parameter(name="token", value=token)
    response.append(connect)
    return str(response)


async def dial(world: World, actor: CallActor, token: str, to: str = "+15551234567") -> str:
    _, port = actor.media_address()
    assert actor.plan is not None
    call = await asyncio.to_thread(
        world.twilio.calls.create,
        to=to,
        from_="+15005550006",
        twiml=twiml(port, actor.plan.call_id, token),
    )
    await actor.dialed(actor.plan.call_id, call.sid)
    return str(call.sid)


@pytest.mark.parametrize("model", ["gpt-realtime", "gpt-realtime-mini"])
async def test_a_call_runs_from_greeting_to_the_callers_hangup(model: str) -> None:
    # Any OPENAI_REALTIME_MODEL: the session is configured for the model it was opened
    # with (Realtime refuses a session.update that names another).
    async with make_world(model=model) as world:
        actor = make_actor(world)
        await actor.start()
        token = secrets.token_urlsafe(16)
        await actor.prepare(CallPlan("call-1", "Book a cleaning.", stream_token=token))
        await dial(world, actor, token)
        assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
    actions = world.recorder.actions
    assert not [a for a in actions if isinstance(a, ProblemNoted)]
    said = [a for a in actions if isinstance(a, AgentTurnFinished | CallerTurnTranscribed)]
    assert said[0] == AgentTurnFinished(
        said[0].item_id, "Hello! This is Ava calling from Bright Smiles Dental."
    )
    assert isinstance(said[1], CallerTurnTranscribed)
    assert said[1].text == "Hello? Who is this?"
    assert FinishCall("stream_stopped") in actions
    assert world.ended == []  # the caller hung up; we did not


async def test_a_recycled_actor_serves_a_second_call_and_forgets_the_first(
    world: World,
) -> None:
    actor = make_actor(world)
    first_address = await actor.start()
    token = secrets.token_urlsafe(16)
    world.recorder.refusals = 1  # the first report is refused: it is sent again, still first
    await actor.prepare(CallPlan("call-1", "Book a cleaning.", stream_token=token))
    await dial(world, actor, token)
    assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
    first_batches = len(world.recorder.batches)

    second_address = await actor.recycle(max_calls=2)
    assert second_address is not None and second_address != first_address
    with pytest.raises(OSError):  # the first call's port is closed: nothing reaches call 2
        await websockets.connect(f"ws://127.0.0.1:{first_address[1]}/media/call-1")
    assert (actor.plan, actor.call_sid, actor.shell) == (None, None, None)

    token = secrets.token_urlsafe(16)
    await actor.prepare(CallPlan("call-2", "Book a cleaning.", stream_token=token))
    assert await actor.hang_up("call-1") is False  # a late hang-up of the last call
    await actor.twilio_status("call-1", "no-answer")  # a repeated callback of the last call
    await dial(world, actor, token, to="+15557654321")
    assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
    second = [a for b in world.recorder.batches[first_batches:] for a, _ in b]
    said = [a for a in second if isinstance(a, CallerTurnTranscribed)]
    assert [a.text for a in said] == ["Hello? Who is this?"]
    assert set(world.recorder.call_ids[first_batches:]) == {"call-2"}
    assert set(world.recorder.call_ids[:first_batches]) == {"call-1"}
    # Each report numbers its first action by the call's actions delivered before it:
    # the refused one went again as 0, and each call counts from 0.
    assert world.recorder.refusals == 0
    for batches, seqs in (
        (world.recorder.batches[:first_batches], world.recorder.seqs[:first_batches]),
        (world.recorder.batches[first_batches:], world.recorder.seqs[first_batches:]),
    ):
        sizes = [len(batch) for batch in batches]
        assert seqs == [sum(sizes[:n]) for n in range(len(sizes))]
    # Each call is its own sender: the second call's numbers are not the first's.
    first_sender, second_sender = world.recorder.senders[0], world.recorder.senders[-1]
    assert set(world.recorder.senders) == {first_sender, second_sender}
    assert first_sender != second_sender
    assert await actor.recycle(max_calls=2) is None  # served its two calls: retire it


async def test_an_actor_says_what_it_does_and_wraps_a_call_up_once(world: World) -> None:
    actor = make_actor(world)
    assert await actor.describe() == (None, None)  # not started
    address = await actor.start()
    assert await actor.describe() == (None, address)  # ready for a call
    token = secrets.token_urlsafe(16)
    await actor.prepare(CallPlan("call-1", "Book a cleaning.", stream_token=token))
    assert await actor.describe() == ("call-1", address)
    await dial(world, actor, token)
    # The pool that died and the one that took over both wait for the call's end.
    endings = asyncio.gather(actor.wait_finished(), actor.wait_finished())
    assert await asyncio.wait_for(endings, 60) == ["stream_stopped", "stream_stopped"]
    assert await actor.wait_finished() == "stream_stopped"  # asked again afterwards
    assert actor.calls_served == 1
    assert sum(isinstance(a, FinishCall) for a in world.recorder.actions) == 1
    assert await actor.describe() == ("call-1", None)  # wrapped up: no address until recycled


async def test_recycling_needs_a_finished_call(world: World) -> None:
    actor = make_actor(world)
    await actor.start()
    with pytest.raises(LocalProtocolError):
        await actor.recycle(max_calls=5)


async def test_a_web_calls_socket_must_offer_its_token_at_the_handshake(world: World) -> None:
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-w", "Test.", stream_token="tok", web=True))
    url = f"ws://127.0.0.1:{port}/media/call-w"
    for offered in ([], ["token.wrong"], ["bearer.tok"]):
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(url, subprotocols=[Subprotocol(p) for p in offered])
        assert info.value.response.status_code == 403
    # Refused strangers neither took the call's place nor ended it: its own page can.
    async with websockets.connect(
        url, subprotocols=[Subprotocol("other"), Subprotocol("token.tok")]
    ) as ws:
        assert ws.subprotocol == "token.tok"
        assert await actor.hang_up("call-w") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"
    refused = [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]
    assert refused == [ProblemNoted("twilio", "stream_refused", "no valid token offered")]


async def test_a_refused_handshake_is_noted_once_and_an_answered_call_without_a_stream_fails(
    world: World,
) -> None:
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-s", "Test.", stream_token="t"))
    for _ in range(3):  # Twilio retrying, or a prober: one note on the call's timeline
        signed = {"Host": f"127.0.0.1:{port}", "X-Twilio-Signature": "x"}
        assert await handshake_status(port, "/media/call-s", signed) == 403
    assert await handshake_status(port, "/media/another-call", {}) == 404  # not this call's
    await actor.twilio_status("call-s", "in-progress")
    await actor.twilio_status("call-s", "completed")
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "completed"
    problems = [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]
    assert [(p.reason, p.fatal) for p in problems] == [
        ("stream_refused", False),
        ("no_stream", True),
    ]
    assert problems[0].message.endswith(f"does not match ws://127.0.0.1:{port}/media/call-s")
    assert "handshake was refused" in problems[1].message


async def test_a_bad_signature_is_refused_before_any_audio(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.1)  # hung up undialed: no CallSid comes
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-2", "Test.", stream_token="t"))
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/media/call-2",
            additional_headers={"X-Twilio-Signature": "forged"},
        ):
            pass
    assert info.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus) as other:
        async with websockets.connect(f"ws://127.0.0.1:{port}/media/another-call"):
            pass
    assert other.value.response.status_code == 404
    assert await actor.hang_up("call-other") is False  # not its call
    assert await actor.hang_up("call-2") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"


async def test_an_api_hang_up_of_a_live_call_notes_no_failed_hang_up(world: World) -> None:
    # Closing the call's media socket ends it at Twilio too (nothing follows </Connect>),
    # so the REST hang-up may find it over (21220): that is the hang-up done, no problem.
    actor = make_actor(world)
    await actor.start()
    token = secrets.token_urlsafe(16)
    await actor.prepare(CallPlan("call-9", "Test.", stream_token=token))
    sid = await dial(world, actor, token)
    await asyncio.wait_for(actor._stream_started.wait(), 30)
    assert await actor.hang_up("call-9") is True
    assert await asyncio.wait_for(actor.wait_finished(), 30) == "api"
    assert world.ended == [sid]
    assert (await asyncio.to_thread(world.twilio.calls(sid).fetch)).status == "completed"
    problems = [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]
    assert [p.reason for p in problems if p.reason == "hangup_failed"] == []


async def handshake_status(port: int, path: str, headers: dict[str, str]) -> int:
    """The status a raw upgrade request with exactly these headers is answered with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", "Upgrade: websocket", "Connection: Upgrade"]
    lines += ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "forwarded",
    [
        {"Host": "127.0.0.1:abc"},
        {"Host": "127.0.0.1:99999"},
        {"Host": "[::1"},
        {"Host": "127.0.0.1", "X-Forwarded-Host": "calls.example.com:abc"},
        {"Host": "127.0.0.1", "X-Forwarded-Host": "calls.example.com:99999"},
        {"Host": "127.0.0.1", "X-Forwarded-Host": "[::1"},
        # Bytes past ASCII (obs-text, which the edge passes on): no URL Twilio signs.
        {"Host": "caf\u00e9.example.com"},
        {"Host": "127.0.0.1", "X-Forwarded-Host": "caf\u00e9.example.com"},
        {"Host": "127.0.0.1", "X-Forwarded-Proto": "http\u00e9"},
        {"Host": "127.0.0.1", "X-Twilio-Signature": "\u00e9"},
    ],
)
async def test_a_host_that_makes_no_url_is_refused_like_a_bad_signature(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    forwarded: dict[str, str],
) -> None:
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.1)  # hung up undialed: no CallSid comes
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-h", "Test.", stream_token="t"))
    headers = {"X-Twilio-Signature": "whatever"} | forwarded
    assert await handshake_status(port, "/media/call-h", headers) == 403
    assert not [r for r in caplog.records if r.exc_info], "refused with a traceback"
    assert "media handshake refused" in caplog.text
    # Refused, not claimed: the call's own stream could still join; here it is hung up.
    assert await actor.hang_up("call-h") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"


async def test_a_web_token_past_ascii_is_refused_not_a_500(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.1)
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-w", "Test.", stream_token="t", web=True))
    headers = {"Host": "127.0.0.1", "Sec-WebSocket-Protocol": "token.\u00e9"}
    assert await handshake_status(port, "/media/call-w", headers) == 403
    assert not [r for r in caplog.records if r.exc_info], "refused with a traceback"
    assert await actor.hang_up("call-w") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"


async def test_a_wrong_token_closes_the_stream_with_1008(world: World) -> None:
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-3", "Test.", stream_token="the-right-one"))
    sid = await dial(world, actor, token="a-wrong-one")
    assert await asyncio.wait_for(actor.wait_finished(), 30) == "stream_refused"
    assert any(
        isinstance(a, ProblemNoted) and a.reason == "stream_refused" for a in world.recorder.actions
    )
    assert world.ended == [sid]


async def test_a_calls_last_report_waits_out_a_recorder_that_is_away(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The recorder restarts just as the call ends: its end is sent again until taken,
    # and only then is the actor free for another call.
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.1)  # hung up undialed: no CallSid comes
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-7", "Test.", stream_token="t"))
    world.recorder.refusals = 3
    assert await actor.hang_up("call-7") is True
    assert await asyncio.wait_for(actor.wait_finished(), 30) == "api"
    assert world.recorder.refusals == 0
    assert FinishCall("api") in world.recorder.actions
    assert await actor.recycle(max_calls=5) is not None


async def test_a_backlog_merges_transcript_deltas_only_within_one_item() -> None:
    # While the recorder is away, a run of one item's deltas becomes one delta. Another
    # item's delta is never folded in, even where its offset happens to follow on.
    recorder = Recorder(refusals=1)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        twilio_auth_token=SecretStr(TOKEN),
        openai_api_key=SecretStr("k"),
    )
    actor = CallActor("slot-1", settings, recorder, lambda sid: asyncio.sleep(0))
    actor.plan = CallPlan("call-m", "Test.", stream_token="t")
    now = time.monotonic()
    actor.record(PhaseChanged("thinking", "speaking"), now)
    await actor._send_reports()  # refused: the outage begins
    deltas = [("item_2", "Oh", 0), ("item_1", "Hi", 0), ("item_2", " no", 2), ("item_2", "!", 5)]
    for item, delta, offset in deltas:
        actor.record(AgentTranscriptGrew(item, delta, offset), now)
    await actor._send_reports()
    assert recorder.actions == [
        PhaseChanged("thinking", "speaking"),
        AgentTranscriptGrew("item_2", "Oh", 0),
        AgentTranscriptGrew("item_1", "Hi", 0),
        AgentTranscriptGrew("item_2", " no!", 2),
    ]


async def test_a_busy_line_ends_the_call_before_any_stream(world: World) -> None:
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-4", "Test.", stream_token="t"))
    await actor.twilio_status("call-other", "busy")  # not its call: ignored
    await actor.twilio_status("call-4", "busy")
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "busy"
    assert not [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]  # not answered


async def test_a_warm_actor_reads_the_wall_clock_as_its_call_begins(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waited warm while the wall clock stepped an hour: its call's events are stamped
    by the clock as it is now, not as it was when the actor started."""
    actor = make_actor(world)
    await actor.start()
    real_time = time.time
    with monkeypatch.context() as stepped:
        stepped.setattr(call_actor.time, "time", lambda: real_time() + 3600)
        await actor.prepare(CallPlan("call-7", "Test.", stream_token="t"))
    await actor.twilio_status("call-7", "busy")
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "busy"
    stamps = [at for batch in world.recorder.batches for _, at in batch]
    assert stamps and all(at > real_time() + 3000 for at in stamps)


async def test_a_retried_webhook_gets_the_calls_first_token(world: World) -> None:
    # Twilio retried the inbound webhook, or someone replayed a captured one, however
    # often: the actor is prepared again for its call (not refused, not a second
    # session), and each answer carries the first token, the one Twilio acts on.
    actor = make_actor(world)
    await actor.start()
    assert await actor.prepare(CallPlan("call-6", "Book a cleaning.", stream_token="first")) == (
        "first"
    )
    session = actor.shell
    for _ in range(10):
        again = CallPlan("call-6", "Book a cleaning.", stream_token=secrets.token_urlsafe(16))
        assert await actor.prepare(again) == "first"
    assert actor.shell is session
    await dial(world, actor, "first")
    assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
    assert not [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]
    with pytest.raises(LocalProtocolError):  # its stream came and went: too late now
        await actor.prepare(CallPlan("call-6", "Book a cleaning.", stream_token="third"))


async def test_a_callback_after_the_end_is_the_actors_only_if_it_ends_the_call_itself(
    world: World,
) -> None:
    # Hung up while ringing: the actor ends the call at Twilio itself (it has the
    # CallSid), so a `ringing` callback meanwhile is its own, not an orphan's.
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-a", "Test.", stream_token="t"))
    await actor.dialed("call-a", "CA" + "a" * 32)  # Twilio has no such call: 404, done
    assert await actor.hang_up("call-a") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"
    assert await actor.twilio_status("call-a", "ringing") is True
    # Its dial failed unseen (the create timed out): a call Twilio rings is nobody's.
    other = make_actor(world)
    await other.start()
    await other.prepare(CallPlan("call-b", "Test.", stream_token="t"))
    await other.twilio_status("call-b", "failed")  # the ingress's word: never dialed
    assert await asyncio.wait_for(other.wait_finished(), 10) == "failed"
    assert await other.twilio_status("call-b", "ringing") is False


async def test_an_answered_call_whose_stream_never_joined_ends_at_completed(world: World) -> None:
    # Answered, then the handshake was refused (or the callee hung up first): Twilio ends
    # the call with `completed`, and nothing else would free the actor and its session.
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-5", "Test.", stream_token="t"))
    assert await actor.twilio_status("call-5", "in-progress") is True  # live here
    assert await actor.twilio_status("call-6", "in-progress") is False  # not its call
    await actor.twilio_status("call-5", "completed")
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "completed"
    # Over here: a callback now says so (Twilio still ringing it would be an orphan).
    assert await actor.twilio_status("call-5", "completed") is False  # a callback repeated
    problems = [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]
    assert [(p.reason, p.fatal) for p in problems] == [("no_stream", True)]  # heard nothing


async def test_a_call_outlasting_its_realtime_session_moves_to_a_new_one() -> None:
    # Sessions last 30 s here and are renewed from 0.5 s after they open: the first
    # quiet moment is when the greeting has played, before the caller speaks.
    async with make_world(session_max_s=30.0, renew_margin_s=29.5) as world:
        actor = make_actor(world)
        await actor.start()
        token = secrets.token_urlsafe(16)
        await actor.prepare(CallPlan("call-9", "Book a cleaning.", stream_token=token))
        await dial(world, actor, token)
        assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
        actions = world.recorder.actions
        assert any(isinstance(a, RenewSession) for a in actions)
        assert not [a for a in actions if isinstance(a, ProblemNoted) and a.fatal]
        said = [a for a in actions if isinstance(a, AgentTurnFinished | CallerTurnTranscribed)]
        texts = [a.transcript if isinstance(a, AgentTurnFinished) else a.text for a in said]
        # The new session heard the caller and, told of the greeting, went on from it.
        assert texts == [
            "Hello! This is Ava calling from Bright Smiles Dental.",
            "Hello? Who is this?",
            "Sure, I can help with that.",
        ]
        first, second, *_ = world.realtime.sessions
        assert first.close_code == 1000
        sent = [f.event for f in second.frames if f.direction == "client" and f.event]
        assert sent[0]["type"] == "session.update"
        assert sent[0]["session"]["instructions"] == "Book a cleaning."
        history = [e["item"] for e in sent if e["type"] == "conversation.item.create"]
        assert history[1] == {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": texts[0]},
            ],
        }
        assert not second.violations


# -- every call ends, whatever word about it is lost ---------------------------------


def statuses(world: World) -> list[str]:
    return [a.status for a in world.recorder.actions if isinstance(a, CallStatusChanged)]


async def test_the_realtime_session_goes_through_the_environments_proxy(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the SDK's connect: where the egress is a proxy, OpenAI is reached through it.
    heads: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 403 Forbidden\r\n\r\n")  # no tunnel: enough to see it asked
        writer.close()

    for name in ("http", "https", "ws", "wss", "socks", "all", "no"):
        for variable in (f"{name}_proxy", f"{name.upper()}_PROXY"):
            monkeypatch.delenv(variable, raising=False)
    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        with pytest.raises(RealtimeServiceError) as refused:
            await make_actor(world).open_realtime()
    finally:
        server.close()
    assert "403" in str(refused.value)
    [head] = heads
    assert head.startswith(b"CONNECT 127.0.0.1:")


async def test_a_call_whose_session_failed_to_open_lets_its_actor_go(world: World) -> None:
    actor = make_actor(world)
    await actor.start()
    ending = asyncio.ensure_future(actor.wait_finished())  # the pool asks as it hands out
    bad = world.settings.model_copy(update={"openai_api_key": SecretStr("sk-wrong")})
    actor.settings = bad
    with pytest.raises(Exception):  # noqa: B017 - whatever the Realtime refusal raises
        await actor.prepare(CallPlan("call-p", "Test.", stream_token="t"))
    assert await asyncio.wait_for(ending, 10) == "not_prepared"
    with pytest.raises(LocalProtocolError, match="could not be prepared"):
        await actor.prepare(CallPlan("call-p", "Test.", stream_token="t2"))  # a retry
    assert await actor.recycle(max_calls=5) is None  # retired, not handed out again
    assert world.recorder.batches == []


async def test_a_wrong_openai_key_fails_the_placing_naming_the_cause(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # The service takes the upgrade and refuses the session in-band (error invalid_api_key,
    # close 3000): prepare fails (so the ingress dials nothing and records this message),
    # once, and the actor is retired.
    caplog.set_level(logging.DEBUG)
    key = "sk-wrong-key-for-the-test-4321"
    actor = make_actor(world)
    await actor.start()
    ending = asyncio.ensure_future(actor.wait_finished())
    actor.settings = world.settings.model_copy(update={"openai_api_key": SecretStr(key)})
    with pytest.raises(RealtimeServiceError) as refused:
        await actor.prepare(CallPlan("call-k", "Test.", stream_token="t"))
    message = str(refused.value)
    assert "the OpenAI API key is invalid (check OPENAI_API_KEY)" in message
    assert key not in message and "4321" not in message
    assert refused.value.close_code == 3000
    assert await asyncio.wait_for(ending, 10) == "not_prepared"
    assert await actor.recycle(max_calls=5) is None
    assert world.recorder.batches == []  # no call ran: nothing to report
    assert len(world.realtime.sessions) == 1  # tried once, not again
    record = world.realtime.sessions[0]
    await world.realtime.wait_closed(record)
    assert record.close_code == 3000
    assert key not in caplog.text and "4321" not in caplog.text


async def test_a_call_hung_up_while_its_session_opens_is_not_dialed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    actor = make_actor(world)
    await actor.start()
    ending = asyncio.ensure_future(actor.wait_finished())
    opening, opened = asyncio.Event(), asyncio.Event()
    real_open = actor.open_realtime

    async def open_slowly() -> Any:
        opening.set()
        await opened.wait()
        return await real_open()

    monkeypatch.setattr(actor, "open_realtime", open_slowly)
    preparing = asyncio.ensure_future(actor.prepare(CallPlan("call-h", "Test.", stream_token="t")))
    await opening.wait()
    assert not await actor.hang_up("call-other")  # another call's word changes nothing
    assert await actor.hang_up("call-h")  # taken: the placing stops before the dial
    opened.set()
    with pytest.raises(CallCanceled, match=r"call-h was hung up \(api\) before it was dialed"):
        await preparing
    assert await asyncio.wait_for(ending, 10) == "not_prepared"
    assert not await actor.hang_up("call-h")  # nothing left to hang up
    assert await actor.recycle(max_calls=5) is None


async def test_a_call_hung_up_once_its_actor_is_handed_out_is_not_prepared(
    world: World,
) -> None:
    actor = make_actor(world)
    await actor.start()
    assert not await actor.hang_up("call-e")  # a ready actor serves no call
    ending = asyncio.ensure_future(actor.wait_finished())  # handed out: the pool waits
    await asyncio.sleep(0)  # one turn of the loop: the wait begins (for ``prepare``)
    assert await actor.hang_up("call-e")  # the ingress named it; ``prepare`` is on its way
    await actor.hang_up("call-before")  # a late word about its last call hides nothing
    with pytest.raises(CallCanceled, match=r"call-e was hung up \(api\) before it was dialed"):
        await actor.prepare(CallPlan("call-e", "Test.", stream_token="t"))
    assert await asyncio.wait_for(ending, 10) == "not_prepared"
    assert await actor.recycle(max_calls=5) is None


async def test_an_actor_handed_out_but_never_prepared_gives_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "PREPARE_WAIT_S", 0.2)
    actor = make_actor(world)
    await actor.start()
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "not_prepared"
    with pytest.raises(LocalProtocolError, match="gave up"):
        await actor.prepare(CallPlan("call-q", "Test.", stream_token="t"))  # too late
    assert await actor.recycle(max_calls=5) is None


async def test_an_inbound_call_records_its_own_status(world: World) -> None:
    # Twilio sends an inbound call's status callbacks to the number's URL, not ours.
    actor = make_actor(world)
    await actor.start()
    token = secrets.token_urlsafe(16)
    await actor.prepare(CallPlan("call-i", "Answer.", stream_token=token, inbound=True))
    await dial(world, actor, token)
    assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
    assert statuses(world) == ["in-progress", "completed"]


async def test_an_outbound_call_leaves_its_status_to_twilio(world: World) -> None:
    actor = make_actor(world)
    await actor.start()
    token = secrets.token_urlsafe(16)
    await actor.prepare(CallPlan("call-o", "Book.", stream_token=token))
    await dial(world, actor, token)
    assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
    assert statuses(world) == []
    assert actor._stream_started.is_set()  # its `start` stopped the no-stream watchdog


async def test_a_dialed_call_whose_stream_never_comes_is_hung_up_as_failed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its final status callback was lost (or an inbound caller left mid-webhook).
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.3)
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-n", "Test.", stream_token="t"))
    sid = "CA" + "1" * 32
    await actor.dialed("call-n", sid)
    due = actor._stream_due
    await actor.twilio_status("call-n", "ringing")  # a word from Twilio: wait on from now
    assert actor._stream_due >= due
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "no_stream"
    assert world.ended == [sid]  # hung up at Twilio
    assert statuses(world) == ["failed"]
    assert any(
        isinstance(a, ProblemNoted) and a.reason == "no_stream" and a.fatal
        for a in world.recorder.actions
    )


async def test_a_hang_up_before_twilio_answered_the_dial_ends_the_call_there(
    world: World,
) -> None:
    actor = make_actor(world)
    await actor.start()
    token = secrets.token_urlsafe(16)
    await actor.prepare(CallPlan("call-h", "Test.", stream_token=token))
    ending = asyncio.ensure_future(actor.wait_finished())
    assert await actor.hang_up("call-h") is True  # while calls.create is on its way
    _, port = actor.media_address()
    call = await asyncio.to_thread(
        world.twilio.calls.create,
        to="+15551234567",
        from_="+15005550006",
        twiml=twiml(port, "call-h", token),
    )
    await actor.dialed("call-h", call.sid)
    assert await asyncio.wait_for(ending, 30) == "api"
    assert world.ended == [call.sid]  # the phone Twilio was about to ring is not rung


async def test_the_wrap_up_waits_for_a_slow_rest_hang_up(world: World) -> None:
    # A throttled hang-up is retried for seconds: the wrap-up must not cancel it.
    finished: list[str] = []

    async def slow_hang_up(call_sid: str) -> None:
        for _ in range(100):
            await asyncio.sleep(0)  # yields: a wrap-up that cancels it gets the chance
        finished.append(call_sid)

    actor = CallActor("slot-1", world.settings, world.recorder, slow_hang_up)
    await actor.start()
    await actor.prepare(CallPlan("call-s", "Test.", stream_token="t"))
    await actor.dialed("call-s", "CA" + "2" * 32)
    assert await actor.hang_up("call-s") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"
    assert finished == ["CA" + "2" * 32]


async def test_a_hung_recorder_does_not_hold_the_call_past_its_last_wait(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "LAST_REPORT_WAIT_S", 0.5)
    monkeypatch.setattr(call_actor, "REPORT_TIMEOUT_S", 0.1)
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.1)

    class HungRecorder(Recorder):
        async def report(self, *args: object, **kwargs: object) -> None:
            await asyncio.Event().wait()  # its database never answers

    actor = CallActor("slot-1", world.settings, HungRecorder(), lambda sid: asyncio.sleep(0))
    await actor.start()
    await actor.prepare(CallPlan("call-r", "Test.", stream_token="t"))
    assert await actor.hang_up("call-r") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"
    assert await actor.recycle(max_calls=5) is None  # unreported actions: retired


async def test_only_one_stream_joins_a_call(world: World) -> None:
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-d", "Test.", stream_token="t"))
    url = f"ws://127.0.0.1:{port}/media/call-d"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    headers = {"X-Twilio-Signature": signature}
    attempts = await asyncio.gather(
        websockets.connect(url, additional_headers=headers),
        websockets.connect(url, additional_headers=headers),
        return_exceptions=True,
    )
    joined = [a for a in attempts if not isinstance(a, BaseException)]
    refused = [a for a in attempts if isinstance(a, websockets.InvalidStatus)]
    assert len(joined) == 1 and len(refused) == 1
    assert refused[0].response.status_code == 409
    await joined[0].close()
    assert await asyncio.wait_for(actor.wait_finished(), 30) == "twilio_closed"


async def test_a_stream_arriving_after_the_call_ended_is_refused_with_410(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hung up before Twilio connected the stream: a late but well signed handshake must
    # not join a call that is over (its media server listens until the wrap-up).
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.1)  # hung up undialed: no CallSid comes
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-g", "Test.", stream_token="t"))
    assert await actor.hang_up("call-g") is True
    assert actor.shell is not None and actor.shell.finished.is_set()
    url = f"ws://127.0.0.1:{port}/media/call-g"
    signed = {"Host": f"127.0.0.1:{port}"}
    signed["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(url, {})
    assert await handshake_status(port, "/media/call-g", signed) == 410
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"
    assert not [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]


async def test_a_stream_that_joins_but_never_starts_is_ended_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.3)
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-j", "Test.", stream_token="t"))
    sid = "CA" + "3" * 32
    await actor.dialed("call-j", sid)
    url = f"ws://127.0.0.1:{port}/media/call-j"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature}):
        # Joined, and says nothing: no `start`, so no call deadline of the policy's runs.
        assert await asyncio.wait_for(actor.wait_finished(), 10) == "no_stream"
    assert statuses(world) == ["failed"]
    assert world.ended == [sid]


async def test_a_web_call_whose_page_joins_but_never_starts_ends_unanswered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "WEB_CONNECT_TIMEOUT_S", 0.3)
    actor = make_actor(world)
    _, port = await actor.start()
    await actor.prepare(CallPlan("call-k", "Test.", stream_token="tok", web=True))
    await actor.dialed("call-k", "CA" + "4" * 32)
    url = f"ws://127.0.0.1:{port}/media/call-k"
    async with websockets.connect(url, subprotocols=[Subprotocol("token.tok")]):
        assert await asyncio.wait_for(actor.wait_finished(), 10) == "no-answer"
    assert statuses(world) == ["in-progress", "no-answer"]


async def test_a_web_call_hung_up_before_its_page_connects_ends_canceled(world: World) -> None:
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-c", "Test.", stream_token="tok", web=True))
    assert await actor.hang_up("call-c", "api") is True
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "api"
    assert statuses(world) == ["canceled"]  # called off, not unanswered


async def test_a_call_twilio_queues_past_the_stream_wait_is_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No callback comes while a call waits in Twilio's calls-per-second queue: asked at
    # the deadline, Twilio says "queued", and the call goes on when it is dialed.
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.5)
    async with make_world(cps=0.5) as world:
        busy_line = '<Response><Pause length="30"/></Response>'
        await asyncio.to_thread(  # takes the second's one dial: the next waits ~2 s
            world.twilio.calls.create, to="+15550000001", from_="+15005550006", twiml=busy_line
        )
        actor = make_actor(world)
        await actor.start()
        token = secrets.token_urlsafe(16)
        await actor.prepare(CallPlan("call-q", "Book.", stream_token=token))
        await dial(world, actor, token)
        assert await asyncio.wait_for(actor.wait_finished(), 60) == "stream_stopped"
        assert world.ended == [] and statuses(world) == []


async def test_a_lost_final_callback_is_read_from_twilio(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.2)

    async def busy(call_sid: str) -> str | None:
        return "busy"

    actor = CallActor(
        "slot-1", world.settings, world.recorder, lambda sid: asyncio.sleep(0), status_via_rest=busy
    )
    await actor.start()
    await actor.prepare(CallPlan("call-b", "Test.", stream_token="t", inbound=True))
    await actor.dialed("call-b", "CA" + "8" * 32)
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "busy"
    assert statuses(world) == ["busy"]  # Twilio's word, not a guess
    assert not [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]


@pytest.mark.parametrize("inbound", [False, True])
async def test_a_call_twilio_completed_unheard_ends_completed_with_no_stream_noted(
    world: World, monkeypatch: pytest.MonkeyPatch, inbound: bool
) -> None:
    # Neither `in-progress` nor `completed` reached us: asked at the deadline, Twilio says
    # `completed`. Only an answered call completes, so the callee heard nothing.
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.2)

    async def completed(call_sid: str) -> str | None:
        return "completed"

    actor = CallActor(
        "slot-1",
        world.settings,
        world.recorder,
        lambda sid: asyncio.sleep(0),
        status_via_rest=completed,
    )
    await actor.start()
    await actor.prepare(CallPlan("call-c", "Test.", stream_token="t", inbound=inbound))
    await actor.dialed("call-c", "CA" + "c" * 32)
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "completed"
    problems = [a for a in world.recorder.actions if isinstance(a, ProblemNoted)]
    assert [(p.reason, p.fatal) for p in problems] == [("no_stream", True)]
    assert "answered but its media stream never joined" in problems[0].message
    # Twilio's word, not a guess: an outbound call's is Twilio's own callback to record.
    assert statuses(world) == (["completed"] if inbound else [])


async def test_a_stream_that_starts_as_the_deadline_comes_is_kept(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.3)
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-z", "Test.", stream_token="t"))
    await actor.dialed("call-z", "CA" + "5" * 32)
    loop = asyncio.get_running_loop()
    due = actor._stream_due  # time.monotonic, which is the loop's clock here

    def stream_starts() -> None:  # what the shell records at `start`
        actor.record(PhaseChanged("awaiting_answer", "idle"), time.monotonic())

    loop.call_at(due + 0.001, stream_starts)  # `start` just after the deadline...
    loop.call_at(due - 0.01, time.sleep, 0.05)  # ...handled in the timer's own loop pass
    watchdog = actor._watchdog
    assert watchdog is not None
    await asyncio.wait_for(watchdog, 10)
    assert actor.shell is not None and not actor.shell.finished.is_set()  # still on
    assert await actor.hang_up("call-z") is True
    await asyncio.wait_for(actor.wait_finished(), 10)
    assert not [a for a in world.recorder.actions if isinstance(a, ProblemNoted) and a.fatal]


async def test_a_call_never_dialed_is_not_held_waiting_for_a_dial(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ingress died between prepare and Twilio's create: no CallSid comes.
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.2)
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 3600.0)
    actor = make_actor(world)
    await actor.start()
    await actor.prepare(CallPlan("call-y", "Test.", stream_token="t"))
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "no_stream"
    # Should its dial come after all, the call is ended there, in that request.
    await actor.dialed("call-y", "CA" + "9" * 32)
    assert world.ended == ["CA" + "9" * 32]


async def test_a_dial_later_than_the_wrap_up_waited_is_ended_and_leaves_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "DIAL_WAIT_S", 0.05)
    ended: list[str] = []

    async def hang_up(call_sid: str) -> None:
        ended.append(call_sid)
        raise RuntimeError("HTTP 400 from Twilio")

    class Watched(CallActor):
        """Says when its wrap-up stops waiting for the CallSid."""

        gave_up = asyncio.Event()

        @property
        def _dial_abandoned(self) -> bool:
            return self.gave_up.is_set()

        @_dial_abandoned.setter
        def _dial_abandoned(self, value: bool) -> None:
            if value:
                self.gave_up.set()

    actor = Watched("slot-1", world.settings, world.recorder, hang_up)
    await actor.start()
    await actor.prepare(CallPlan("call-l", "Test.", stream_token="t"))
    world.recorder.refusals = 3  # the last reports are retried: the wrap-up lingers
    assert await actor.hang_up("call-l") is True  # while Twilio's create is on its way
    ending = asyncio.ensure_future(actor.wait_finished())
    await asyncio.wait_for(Watched.gave_up.wait(), 10)
    await actor.dialed("call-l", "CA" + "6" * 32)  # Twilio's create answered late
    assert ended == ["CA" + "6" * 32]
    assert await asyncio.wait_for(ending, 20) == "api"
    assert await actor.recycle(max_calls=5) is not None
    await actor.prepare(CallPlan("call-2", "Test.", stream_token="t2"))
    assert actor._pending == []  # nothing of the last call's in the next one's reports
    assert await actor.hang_up("call-2") is True


async def test_an_actor_handed_out_but_not_yet_prepared_is_not_ready_to_a_new_pool(
    world: World,
) -> None:
    actor = make_actor(world)
    await actor.start()
    ending = asyncio.ensure_future(actor.wait_finished())  # the pool that handed it out
    await asyncio.sleep(0)  # one loop pass: the task has asked
    assert await actor.describe() == (None, None)  # a new pool retires it
    ending.cancel()


async def test_a_stream_starting_while_twilio_is_asked_is_kept(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.2)
    asked = asyncio.Event()
    answer = asyncio.Event()

    async def slow_status(call_sid: str) -> str | None:
        asked.set()
        await answer.wait()
        return "in-progress"

    actor = CallActor(
        "slot-1",
        world.settings,
        world.recorder,
        lambda sid: asyncio.sleep(0),
        status_via_rest=slow_status,
    )
    await actor.start()
    await actor.prepare(CallPlan("call-s", "Test.", stream_token="t"))
    await actor.dialed("call-s", "CA" + "4" * 32)
    await asyncio.wait_for(asked.wait(), 10)  # the deadline came: Twilio is being asked
    actor.record(PhaseChanged("awaiting_answer", "idle"), time.monotonic())  # `start`
    answer.set()
    assert actor._watchdog is not None
    await asyncio.wait_for(actor._watchdog, 10)
    assert actor.shell is not None and not actor.shell.finished.is_set()
    assert not actor._stream_lost
    assert await actor.hang_up("call-s") is True
    await asyncio.wait_for(actor.wait_finished(), 10)


async def test_answered_without_a_stream_gets_a_grace_then_ends(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.1)
    monkeypatch.setattr(call_actor, "ANSWER_GRACE_S", 0.1)
    asked: list[str] = []

    async def answered(call_sid: str) -> str | None:
        asked.append(call_sid)
        return "in-progress"

    actor = CallActor(
        "slot-1",
        world.settings,
        world.recorder,
        lambda sid: asyncio.sleep(0),
        status_via_rest=answered,
    )
    await actor.start()
    await actor.prepare(CallPlan("call-g", "Test.", stream_token="t"))
    await actor.dialed("call-g", "CA" + "3" * 32)
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "no_stream"
    assert len(asked) == 2  # asked, waited the grace once, asked again


async def test_a_call_twilio_rings_forever_is_given_up_in_the_end(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(call_actor, "STREAM_WAIT_S", 0.05)
    monkeypatch.setattr(call_actor, "STREAM_GIVE_UP_S", 0.3)

    async def ringing(call_sid: str) -> str | None:
        return "ringing"

    actor = CallActor(
        "slot-1",
        world.settings,
        world.recorder,
        lambda sid: asyncio.sleep(0),
        status_via_rest=ringing,
    )
    await actor.start()
    await actor.prepare(CallPlan("call-r", "Test.", stream_token="t"))
    await actor.dialed("call-r", "CA" + "2" * 32)
    assert await asyncio.wait_for(actor.wait_finished(), 10) == "no_stream"
