"""The simulated phone as a Media Streams client (protocols.md 1.2-1.6, 5.1).

Timing is asserted on the emulator's own clocks (what its model says happened
when), never as a wall-clock bound; measured jitter is printed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from pathlib import Path

import numpy as np
import pytest
from twilio.rest import Client

from sim.scenario import CLIPS_DIR
from sim.testing_twilio import TwilioEmulator, run_twilio_emulator
from sim.twilio.probe_app import MediaSession, ProbeApp, stream_twiml
from switchboard.codec import mulaw_decode

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"
TO, FROM = "+15551230000", "+15559870000"
AGENT = (CLIPS_DIR / "agent_reply_short.ulaw").read_bytes()


def sdk(emu: TwilioEmulator) -> Client:
    client = Client(emu.config.account_sid, emu.config.auth_token, environment={})
    client.api.base_url = emu.base_url
    return client


async def dial(emu: TwilioEmulator, twiml: str) -> str:
    call = await asyncio.to_thread(sdk(emu).calls.create, to=TO, from_=FROM, twiml=twiml)
    return str(call.sid)


async def connect(
    emu: TwilioEmulator, app: ProbeApp, **kw: object
) -> tuple[str, MediaSession, str]:
    """Place a call to the probe's stream; return (call sid, session, stream sid)."""
    sid = await dial(emu, stream_twiml(app.ws_url, **kw))  # type: ignore[arg-type]
    session = await app.next_session()
    await session.next("connected")
    start = await session.next("start")
    return sid, session, str(start["streamSid"])


def media(stream_sid: str, audio: bytes) -> dict[str, object]:
    return {
        "event": "media",
        "streamSid": stream_sid,
        "media": {"payload": base64.b64encode(audio).decode()},
    }


def mark(stream_sid: str, name: str) -> dict[str, object]:
    return {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}


async def test_handshake_and_message_shapes(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid = await dial(emu, stream_twiml(app.ws_url, params={"session_id": "abc", "n": "1"}))
    session = await app.next_session()
    assert session.signature_valid  # X-Twilio-Signature = compute_signature(ws_url, {})
    assert session.websocket.headers.get("x-twilio-signature")
    connected = await session.next()
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = await session.next()
    stream_sid = start["streamSid"]
    assert isinstance(stream_sid, str) and stream_sid.startswith("MZ") and len(stream_sid) == 34
    assert start["sequenceNumber"] == "1"
    assert start["start"] == {
        "accountSid": ACCOUNT_SID,
        "streamSid": stream_sid,
        "callSid": sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"session_id": "abc", "n": "1"},
    }
    frames = [await session.next() for _ in range(25)]
    assert {f["event"] for f in frames} == {"media"}
    seqs = [int(f["sequenceNumber"]) for f in frames]  # type: ignore[arg-type]
    chunks = [int(f["media"]["chunk"]) for f in frames]  # type: ignore[index]
    stamps = [int(f["media"]["timestamp"]) for f in frames]  # type: ignore[index]
    assert seqs == list(range(2, 27)) and chunks == list(range(1, 26))
    assert all(isinstance(f["sequenceNumber"], str) for f in frames)
    assert all(isinstance(f["media"]["timestamp"], str) for f in frames)  # type: ignore[index]
    assert 0 < stamps[0] <= 20 and np.all(np.diff(stamps) == 20)  # absolute 20 ms grid
    for f in frames:
        assert f["streamSid"] == stream_sid and f["media"]["track"] == "inbound"  # type: ignore[index]
        assert base64.b64decode(f["media"]["payload"]) == b"\xff" * 160  # type: ignore[index]
    stats = emu.stats()
    print("\nframe lateness ms:", stats["frame_lateness_ms"], "tick:", stats["tick_lateness_ms"])
    assert stats["frames_sent"] >= 25  # type: ignore[operator]


async def test_marks_echo_at_once_when_idle_and_after_playout(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    sid, session, ms = await connect(emu, app)
    await session.send(mark(ms, "idle"))
    echoed = await session.next("mark")
    assert echoed["mark"] == {"name": "idle"} and echoed["streamSid"] == ms

    audio = AGENT[:2400]  # 300 ms
    await session.send(media(ms, audio))
    await session.send(mark(ms, "after-300ms"))
    frames_before_echo = 0
    while (message := await session.next())["event"] != "mark":
        frames_before_echo += message["event"] == "media"
    assert message["mark"] == {"name": "after-300ms"}
    stream = emu.call(sid).streams[0]
    idle, played = stream.marks
    assert idle.played and idle.echoed_ms == idle.received_ms
    assert played.played and played.echoed_ms is not None
    # the model: the mark is reached exactly when its 300 ms of audio has played
    heard = emu.call(sid).heard.items
    assert heard[-1].ended_by == "mark:after-300ms"
    assert heard[-1].end_ms - heard[-1].start_ms == 300
    assert played.echoed_ms == heard[-1].end_ms
    assert frames_before_echo >= 12  # about 15 frames leave while it plays
    print(f"\nmedia frames sent while 300 ms played: {frames_before_echo}")


async def test_clear_flushes_audio_and_echoes_pending_marks(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    sid, session, ms = await connect(emu, app)
    await session.send(media(ms, AGENT[:16000]))  # 2 s
    await session.send(mark(ms, "m1"))
    await session.send(media(ms, AGENT[:800]))
    await session.send(mark(ms, "m2"))
    heard = emu.call(sid).heard
    await emu.wait_until(lambda: heard.end_ms > 100)  # some of it has played
    await session.send({"event": "clear", "streamSid": ms})
    first, second = await session.next("mark"), await session.next("mark")
    assert [first["mark"], second["mark"]] == [{"name": "m1"}, {"name": "m2"}]
    stream = emu.call(sid).streams[0]
    assert [(m.name, m.played) for m in stream.marks] == [("m1", False), ("m2", False)]
    (clear,) = stream.clears
    assert clear.marks == ("m1", "m2")
    assert 0 < clear.dropped_ms < 2100  # 2.1 s buffered, some played: the rest dropped
    item = emu.call(sid).heard.items[-1]
    assert item.ended_by == "cleared" and item.cut
    # played = whole bytes by the time of the clear
    assert item.end_ms - item.start_ms == pytest.approx(2100 - clear.dropped_ms, abs=0.125)


async def test_heard_wav_is_exactly_what_played(
    app: ProbeApp, emu: TwilioEmulator, tmp_path: Path
) -> None:
    sid, session, ms = await connect(emu, app)
    audio = AGENT[1600:4000]  # 300 ms of real speech
    for chunk in (audio[:800], audio[800:810], audio[810:]):  # any message size
        await session.send(media(ms, chunk))
    await session.send(mark(ms, "done"))
    await session.next("mark")
    call = emu.call(sid)
    (item,) = call.heard.items
    path = call.heard.write_wav(tmp_path / "heard.wav")
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    start = round(item.start_ms * 8)
    assert np.array_equal(pcm[start : start + len(audio)], mulaw_decode(audio))
    assert not pcm[:start].any() or set(np.unique(pcm[:start])) <= {0}  # silence before
    assert bytes(call.streams[0].received_audio) == audio


async def test_dtmf_from_the_callee(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid, session, ms = await connect(emu, app)
    assert emu.send_dtmf(sid, "4#")
    one, two = await session.next("dtmf"), await session.next("dtmf")
    for message, digit in ((one, "4"), (two, "#")):
        assert message["dtmf"] == {"track": "inbound_track", "digit": digit}
        assert message["streamSid"] == ms
    assert int(two["sequenceNumber"]) > int(one["sequenceNumber"])  # type: ignore[arg-type]
    stream = emu.call(sid).streams[0]
    assert [d for _, d in stream.dtmf_sent] == ["4", "#"]
    seqs = [int(m["sequenceNumber"]) for m in session.log if "sequenceNumber" in m]  # type: ignore[arg-type]
    assert seqs == list(range(1, len(seqs) + 1))  # one counter across every message type


async def test_rest_hang_up_ends_the_stream_with_stop(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid, session, ms = await connect(emu, app)
    await session.next("media")
    await asyncio.to_thread(sdk(emu).calls(sid).update, status="completed")
    await asyncio.wait_for(session.closed.wait(), 5)
    last = session.log[-1]
    assert last["event"] == "stop" and last["streamSid"] == ms
    assert last["stop"] == {"accountSid": ACCOUNT_SID, "callSid": sid}
    assert int(last["sequenceNumber"]) == int(session.log[-2]["sequenceNumber"]) + 1  # type: ignore[arg-type]
    stream = emu.call(sid).streams[0]
    assert stream.end_reason == "stopped" and stream.events("sent")[-1] == "stop"
    assert emu.call(sid).status == "completed"


async def test_app_closing_the_socket_runs_the_rest_of_the_twiml(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    sid, session, _ = await connect(emu, app, extra="<Say>Goodbye now</Say>")
    session.close()
    await emu.wait_for_call_status(sid, "completed")
    call = emu.call(sid)
    assert call.streams[0].end_reason == "closed-by-app"
    assert "stop" not in call.streams[0].events("sent")
    assert [i.source for i in call.heard.items] == ["say"]
    assert call.end_reason == "twiml-ended"


async def test_update_with_new_twiml_stops_the_stream_and_follows_it(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    sid, first, _ = await connect(emu, app)
    second_twiml = stream_twiml(app.ws_url, params={"leg": "2"})
    await asyncio.to_thread(sdk(emu).calls(sid).update, twiml=second_twiml)
    assert (await first.next("stop"))["event"] == "stop"
    await asyncio.wait_for(first.closed.wait(), 5)
    second = await app.next_session()
    start = await second.next("start")
    assert start["start"]["customParameters"] == {"leg": "2"}  # type: ignore[index]
    call = emu.call(sid)
    assert call.status == "in-progress" and len(call.streams) == 2
    assert call.streams[0].stream_sid != call.streams[1].stream_sid
    await asyncio.to_thread(sdk(emu).calls(sid).update, status="completed")
    await second.next("stop")


async def test_callee_hang_up_and_bad_frames(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid, session, ms = await connect(emu, app)
    await session.websocket.send_text("not json")
    await session.send({"event": "dance", "streamSid": ms})
    await session.send({"event": "media", "streamSid": ms, "media": {"payload": ""}})
    await session.send(mark("MZ" + "9" * 32, "still-alive"))
    assert (await session.next("mark"))["mark"] == {"name": "still-alive"}
    emu.hang_up(sid)
    await session.next("stop")
    await emu.wait_for_call_status(sid, "completed")
    call = emu.call(sid)
    assert call.end_reason == "caller"
    reasons = [r for _, r, _ in call.streams[0].rejected]
    assert reasons == ["invalid_json", "unknown_event", "ignored", "stream_sid_mismatch"]


async def test_messages_without_a_stream_sid_are_played_and_flagged(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    # protocols.md 1.3/6.3: every server -> Twilio message carries the start's streamSid.
    sid, session, ms = await connect(emu, app)
    unsigned = media(ms, b"\x11" * 800)
    del unsigned["streamSid"]
    await session.send(unsigned)
    await session.send({"event": "mark", "streamSid": 7, "mark": {"name": "after"}})
    assert (await session.next("mark"))["mark"] == {"name": "after"}
    stream = emu.call(sid).streams[0]
    # played like a message with a wrong sid, and flagged like one
    assert bytes(stream.received_audio) == b"\x11" * 800 and stream.marks[0].played
    assert [(r, d) for _, r, d in stream.rejected] == [
        ("missing_stream_sid", "message has no string 'streamSid'")
    ] * 2
    session.close()
    await emu.wait_for_call_status(sid, "completed")


async def test_scenario_turns_follow_the_agents_playout(app: ProbeApp, tmp_path: Path) -> None:
    (tmp_path / "a.ulaw").write_bytes(b"\x10" * 800)  # 100 ms
    (tmp_path / "b.ulaw").write_bytes(b"\x20" * 800)
    from sim.scenario import parse_scenario

    scenario = parse_scenario(
        {
            "numbers": {"default": {"answer_after_s": 0.05}},
            "caller": [
                {"say": "one", "clip": "a.ulaw", "at_ms": 100},
                {"say": "two", "clip": "b.ulaw", "after_agent_ms": 150},
                {"say": "three", "clip": "a.ulaw", "barge_in_ms": 100},
                {"hangup": True, "after_agent_ms": 0},
            ],
        },
        base_dir=tmp_path,
    )
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario
    ) as emu:
        sid, session, ms = await connect(emu, app)

        async def until_speech(byte: int) -> None:
            while True:
                m = await session.next("media")
                if base64.b64decode(m["media"]["payload"])[0] == byte:  # type: ignore[index]
                    return

        await until_speech(0x10)  # turn one
        await session.send(media(ms, AGENT[:1600]))  # a 200 ms reply
        await until_speech(0x20)  # turn two, after the reply stopped
        await session.send(media(ms, AGENT[:8000]))  # a 1 s reply...
        await until_speech(0x10)  # ...that turn three barges into
        await session.send({"event": "clear", "streamSid": ms})
        await session.send(media(ms, AGENT[:400]))  # a 50 ms reply, then the callee hangs up
        await session.next("stop")
        await emu.wait_for_call_status(sid, "completed")
    call = emu.call(sid)
    stream = call.streams[0]
    said = dict((label, t) for t, label in stream.said)
    assert list(said) == ["one", "two", "three"]
    assert stream.started_ms is not None
    assert 100 <= said["one"] - stream.started_ms <= 120
    reply1, reply2, reply3 = call.heard.items
    assert reply1.end_ms - reply1.start_ms == 200 and reply1.ended_by == "drained"
    assert 150 <= said["two"] - reply1.end_ms <= 150 + 21
    assert 100 <= said["three"] - reply2.start_ms <= 100 + 21
    assert reply2.ended_by == "cleared"
    assert reply3.ended_by == "drained" and call.end_reason == "caller"


async def test_default_callee_says_hello_after_answering(app: ProbeApp) -> None:
    from sim.scenario import parse_scenario

    scenario = parse_scenario({"numbers": {"default": {"answer_after_s": 0.05}}})
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, scenario=scenario
    ) as emu:
        sid, session, _ = await connect(emu, app)
        stream = emu.call(sid).streams[0]
        await emu.wait_until(lambda: bool(stream.said))
        ((t, label),) = stream.said
        assert label == "Hello? Who is this?"
        assert stream.started_ms is not None and 300 <= t - stream.started_ms <= 320
        hello = (CLIPS_DIR / "caller_hello.ulaw").read_bytes()
        at = round(t - stream.started_ms)  # stream time of the frame that starts the clip
        frames = []
        while not frames or int(frames[-1]["media"]["timestamp"]) < at + 40:  # type: ignore[index]
            frames.append(await session.next("media"))
        payloads = {
            int(f["media"]["timestamp"]): base64.b64decode(f["media"]["payload"])  # type: ignore[index]
            for f in frames
        }
        assert payloads[at] + payloads[at + 20] + payloads[at + 40] == hello[:480]
        assert set(payloads[at - 20]) == {0xFF}
        session.close()


async def test_journal_and_wavs_in_the_log_dir(app: ProbeApp, tmp_path: Path) -> None:
    from sim.scenario import parse_scenario

    scenario = parse_scenario({"numbers": {"default": {"answer_after_s": 0.05}}})
    async with run_twilio_emulator(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        scenario=scenario,
        default_caller=False,
        log_dir=tmp_path,
    ) as emu:
        sid, session, ms = await connect(emu, app)
        await session.send(media(ms, AGENT[:800]))
        await session.send(mark(ms, "m"))
        await session.next("mark")
        await asyncio.to_thread(sdk(emu).calls(sid).update, status="completed")
        await emu.wait_for_call_status(sid, "completed")
        journal = emu.journal_path
    assert journal is not None
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    kinds = {line["kind"] for line in lines}
    assert {"http", "ws", "call"} <= kinds
    created = next(line for line in lines if line["kind"] == "http" and line["status"] == 201)
    assert created["body"]["sid"] == sid
    sent = [line["message"] for line in lines if line["kind"] == "ws"]
    assert [m["event"] for m in sent[:2]] == ["connected", "start"]
    assert sent[-1]["event"] == "stop" and any(m["event"] == "mark" for m in sent)
    assert all("base64" in m["media"]["payload"] for m in sent if m["event"] == "media")
    assert (tmp_path / f"{sid}.heard.wav").is_file()
    assert (tmp_path / f"{emu.call(sid).streams[0].stream_sid}.said.wav").is_file()


async def test_an_oversized_parameter_is_warned_about_and_still_passed(
    app: ProbeApp, emu: TwilioEmulator
) -> None:
    # protocols.md 1.1: name + value under 500 characters; what Twilio does past it is not
    # documented, so the emulator warns (12200) and passes the parameter on.
    params = {"ok": "v" * 497, "big": "v" * 497}  # 499 and 500 characters
    sid, session, _ = await connect(emu, app, params=params)
    call = emu.call(sid)
    assert call.streams[0].custom_parameters == params
    assert [(n.code, n.level) for n in call.notifications] == [(12200, "warning")]
    assert "'big'" in call.notifications[0].message
    session.close()
    await emu.wait_for_call_status(sid, "completed")


async def test_injected_clip_and_audio_reach_the_app(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid, session, _ = await connect(emu, app)
    hello = (CLIPS_DIR / "caller_hello.ulaw").read_bytes()
    assert emu.say_clip(sid, "caller_hello")
    assert emu.inject_audio(sid, b"\x42" * 320, label="two-frames")
    stream = emu.call(sid).streams[0]
    await emu.wait_until(
        lambda: [label for _, label in stream.said] == ["caller_hello", "two-frames"]
    )
    (t_hello, _), (t_two, _) = stream.said
    # back to back: the injected audio starts inside the clip's last, partial frame
    assert t_two - t_hello == pytest.approx(20 * (len(hello) // 160))
    received = b""
    while b"\x42" * 320 not in received:
        received += base64.b64decode((await session.next("media"))["media"]["payload"])  # type: ignore[index]
    start = received.find(hello[:1600])
    assert start >= 0 and received[start : start + len(hello)] == hello


async def test_stream_url_query_string_is_dropped(app: ProbeApp, emu: TwilioEmulator) -> None:
    sid = await dial(emu, stream_twiml(app.ws_url + "?token=abc"))
    session = await app.next_session()
    assert session.websocket.url.query == ""  # Twilio strips it: use <Parameter> instead
    assert session.signature_valid  # signed over the URL actually connected to
    await session.next("start")
    call = emu.call(sid)
    assert call.streams[0].url == app.ws_url
    assert [(n.code, n.level) for n in call.notifications] == [(12200, "warning")]
    session.close()
