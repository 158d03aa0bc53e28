"""The emulator's pure parts: call state machine, playout buffer, caller script, TwiML, wire."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from sim.scenario import ANSWERED_BY, CallerTurn
from sim.twilio.amd import amd_result
from sim.twilio.caller import CallerScript, Utterance, dtmf_utterance
from sim.twilio.calls import CallEvent, CallMachine, CallPlan, CallStatus
from sim.twilio.media import (
    AudioReceived,
    ClearReceived,
    Ignored,
    MarkReceived,
    Rejected,
    StreamWriter,
    parse_server_message,
    stream_sid_problem,
)
from sim.twilio.playout import AudioPlayed, Cleared, MarkEchoed, Playout, RunEnded, RunStarted
from sim.twilio.twiml import (
    Connect,
    Dial,
    Hangup,
    Pause,
    Redirect,
    Say,
    StreamSpec,
    TwimlError,
    Unsupported,
    parse_twiml,
)
from sim.twilio.wire import ApiError, rfc2822
from switchboard.errors import IllegalTransition

# -- call state machine ------------------------------------------------------------------


def run_machine(plan: CallPlan, until: float) -> tuple[CallMachine, list[tuple[float, str]]]:
    machine = CallMachine(plan, dial_at=1.0)
    seen = []
    while (deadline := machine.next_deadline) is not None and deadline <= until:
        seen += [(tr.at, tr.after.value) for tr in machine.tick(deadline)]
    return machine, seen


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (
            CallPlan("human", answer_after_s=2.0, hangup_after_s=5.0),
            [(1.0, "queued"), (1.05, "ringing"), (3.05, "in-progress"), (8.05, "completed")],
        ),
        (
            CallPlan("busy", answer_after_s=0.5),
            [(1.0, "queued"), (1.05, "ringing"), (1.55, "busy")],
        ),
        (CallPlan("failed", answer_after_s=0.2), [(1.0, "queued"), (1.2, "failed")]),
        (
            CallPlan("no-answer", timeout_s=10),
            [(1.0, "queued"), (1.05, "ringing"), (11.05, "no-answer")],
        ),
        (  # answering slower than Timeout is no answer at all
            CallPlan("human", answer_after_s=30, timeout_s=5),
            [(1.0, "queued"), (1.05, "ringing"), (6.05, "no-answer")],
        ),
        (
            CallPlan("voicemail", answer_after_s=1.0, time_limit_s=4),
            [(1.0, "queued"), (1.05, "ringing"), (2.05, "in-progress"), (6.05, "completed")],
        ),
    ],
)
def test_machine_follows_the_plan(plan: CallPlan, expected: list[tuple[float, str]]) -> None:
    machine, seen = run_machine(plan, until=1000)
    assert [(round(at, 3), status) for at, status in seen] == expected
    assert machine.ended and machine.next_deadline is None


def test_machine_ends_reasons_and_caps() -> None:
    machine, _ = run_machine(CallPlan(answer_after_s=1, time_limit_s=3), until=1000)
    assert machine.end_reason == "time-limit"
    machine, _ = run_machine(CallPlan(answer_after_s=1, max_call_s=2), until=1000)
    assert machine.end_reason == "caller"
    machine = CallMachine(CallPlan(answer_after_s=1), dial_at=0)
    machine.tick(1.05)
    machine.set_time_limit(10)
    assert machine.next_deadline == pytest.approx(11.05)


def test_machine_external_moves_and_illegal_ones() -> None:
    machine = CallMachine(CallPlan(), dial_at=5.0)
    assert machine.cancel(1.0).after is CallStatus.CANCELED
    assert machine.next_deadline is None
    with pytest.raises(IllegalTransition, match="canceled"):
        machine.hang_up(2.0, "api")
    machine = CallMachine(CallPlan(answer_after_s=0.1), dial_at=0)
    machine.tick(1.0)
    assert machine.status is CallStatus.IN_PROGRESS
    with pytest.raises(IllegalTransition):
        machine.cancel(1.0)  # canceled is only for calls not yet answered
    tr = machine.fail(1.5, "twiml-error-12100")
    assert (tr.event, tr.after, machine.end_reason) == (
        CallEvent.FAILED,
        CallStatus.FAILED,
        "twiml-error-12100",
    )


# -- playout -----------------------------------------------------------------------------


def test_playout_plays_in_real_time_and_echoes_marks_in_order() -> None:
    p = Playout()
    assert p.push_mark("empty", 0.0) == [MarkEchoed("empty", 0.0, played=True)]
    events = p.push_audio(b"\x01" * 800, 10.0)  # 100 ms
    assert events == [RunStarted(10.0)]
    p.push_mark("a", 10.0)
    # 50 ms more, queued behind the mark; pushing also lets the first 10 ms play
    assert p.push_audio(b"\x02" * 400, 20.0) == [AudioPlayed(10.0, b"\x01" * 80)]
    p.push_mark("b", 20.0)
    assert p.advance(60.0) == [AudioPlayed(20.0, b"\x01" * 320)]
    events = p.advance(200.0)
    assert events == [
        AudioPlayed(60.0, b"\x01" * 400),
        MarkEchoed("a", 110.0, played=True),
        AudioPlayed(110.0, b"\x02" * 400),
        MarkEchoed("b", 160.0, played=True),
        RunEnded(160.0, "drained"),
    ]
    assert not p.playing and p.buffered_bytes == 0


def test_playout_clear_flushes_audio_and_marks() -> None:
    p = Playout()
    p.push_audio(b"\x01" * 1600, 0.0)  # 200 ms
    p.push_mark("m1", 0.0)
    p.push_audio(b"\x02" * 800, 0.0)
    p.push_mark("m2", 0.0)
    events = p.clear(50.0)
    assert events == [
        AudioPlayed(0.0, b"\x01" * 400),
        RunEnded(50.0, "cleared"),
        MarkEchoed("m1", 50.0, played=False),
        MarkEchoed("m2", 50.0, played=False),
        Cleared(50.0, 2000, ("m1", "m2")),
    ]
    assert p.advance(500.0) == []
    assert p.push_mark("after", 500.0) == [MarkEchoed("after", 500.0, played=True)]


def test_playout_underrun_then_resume_starts_a_new_run() -> None:
    p = Playout()
    p.push_audio(b"\x01" * 80, 0.0)  # 10 ms
    assert p.advance(30.0)[-1] == RunEnded(10.0, "drained")
    assert p.push_audio(b"\x01" * 80, 40.0) == [RunStarted(40.0)]
    assert p.close(45.0)[-1] == RunEnded(45.0, "closed")


# -- caller script -----------------------------------------------------------------------


def _script(*turns: CallerTurn) -> CallerScript:
    clips = {Path("a"): b"\x10" * 400, Path("b"): b"\x20" * 160}
    return CallerScript.of(turns, clips.__getitem__, dtmf_audio=True)


def _run(script: CallerScript, start: float, end: float) -> list[tuple[float, bytes]]:
    out = []
    t = start
    while t < end:
        frame = script.frame(t)
        assert len(frame.audio) == 160
        out.append((t, frame.audio))
        t += 20
    return out


def test_caller_at_ms_turn_speaks_the_clip_then_silence() -> None:
    script = _script(CallerTurn(clip=Path("a"), at_ms=40))
    frames = _run(script, 0, 140)
    assert [f[1][0] for f in frames] == [0xFF, 0xFF, 0x10, 0x10, 0x10, 0xFF, 0xFF]
    assert frames[4][1] == b"\x10" * 80 + b"\xff" * 80  # 400 bytes = 2.5 frames


def test_caller_waits_for_the_agent_to_stop_then_after_agent_ms() -> None:
    script = _script(CallerTurn(clip=Path("b"), after_agent_ms=100))
    assert _run(script, 0, 200)[-1][1][0] == 0xFF  # no agent yet: silent
    script.on_playout(RunStarted(200.0))
    assert script.frame(300).audio[0] == 0xFF  # agent talking
    script.on_playout(RunEnded(400.0, "drained"))
    assert script.frame(480).audio[0] == 0xFF  # quiet 80 ms < 100 ms
    assert script.frame(500).audio[0] == 0x20


def test_caller_barge_in_counts_from_the_start_of_the_next_reply() -> None:
    script = _script(
        CallerTurn(clip=Path("b"), at_ms=0), CallerTurn(clip=Path("b"), barge_in_ms=300)
    )
    assert script.frame(0).audio[0] == 0x20  # first turn spoken, ends at 20 ms
    script.on_playout(RunStarted(100.0))
    assert script.frame(380).audio[0] == 0xFF
    assert script.frame(400).audio[0] == 0x20  # 300 ms into the reply, still playing


def test_caller_short_gaps_do_not_split_a_reply() -> None:
    script = _script(CallerTurn(clip=Path("b"), after_agent_ms=100))
    script.on_playout(RunStarted(0.0))
    script.on_playout(RunEnded(100.0, "drained"))
    script.on_playout(RunStarted(150.0))  # 50 ms gap: same reply, still playing
    assert script.frame(260).audio[0] == 0xFF
    script.on_playout(RunEnded(300.0, "drained"))
    assert script.frame(400).audio[0] == 0x20


def test_caller_dtmf_and_hangup_turns() -> None:
    script = _script(CallerTurn(dtmf="1w2", at_ms=0), CallerTurn(hangup=True, at_ms=0))
    digits = []
    t = 0.0
    while not (frame := script.frame(t)).hangup:
        digits += [(t, d) for d in frame.digits]
        t += 20
    # "1": 100 ms tone, reported at its end; "w" 500 ms after the 100 ms gap; then "2"
    assert digits == [(80.0, "1"), (780.0, "2")]
    utt = dtmf_utterance("5", with_audio=False)
    assert set(utt.audio) == {0xFF} and utt.digits == ((800, "5"),)


def test_injected_audio_plays_after_current_speech() -> None:
    script = _script()
    script.inject(Utterance(b"\x33" * 200, label="x"))
    first = script.frame(0)
    assert first.said == ("x",) and first.audio == b"\x33" * 160
    assert script.frame(20).audio == b"\x33" * 40 + b"\xff" * 120


# -- answering machine detection ---------------------------------------------------------

# What Twilio sends in AnsweredBy for each MachineDetection mode (protocols.md 2.6).
AMD_VALUES = {
    "Enable": {"human", "machine_start", "fax", "unknown"},
    "DetectMessageEnd": {
        "human",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
        "unknown",
    },
}


@pytest.mark.parametrize("mode", sorted(AMD_VALUES))
@pytest.mark.parametrize("scripted", ANSWERED_BY)
def test_amd_reports_only_values_of_its_mode(mode: str, scripted: str) -> None:
    result = amd_result(mode, "voicemail", scripted, {}, 4000)
    assert result.answered_by in AMD_VALUES[mode]


def test_amd_maps_a_scripted_machine_to_the_mode() -> None:
    # A machine scripted without saying how its greeting ends: no beep, no silence cue.
    assert amd_result("DetectMessageEnd", "voicemail", "machine_start", {}, 4000) == (
        amd_result("DetectMessageEnd", "voicemail", "machine_end_other", {}, 4000)
    )
    assert amd_result("DetectMessageEnd", "voicemail", "machine_start", {}, 4000).duration_ms == (
        4000  # at the end of the machine's greeting, not at speech_threshold
    )
    assert amd_result("Enable", "voicemail", "machine_end_beep", {}, 4000).answered_by == (
        "machine_start"
    )
    assert amd_result("DetectMessageEnd", "human", "machine_start", {}, 4000).answered_by == (
        "human"
    )


# -- TwiML -------------------------------------------------------------------------------


def test_twiml_parses_the_verbs_we_act_on() -> None:
    doc = parse_twiml(
        """<?xml version="1.0" encoding="UTF-8"?>
        <Response>
          <Say voice="alice" loop="2">Hi there</Say>
          <Pause length="2"/>
          <Connect action="https://app/next"><Stream url="wss://b/media" statusCallback="https://app/s">
            <Parameter name="session" value="abc"/><Parameter name="lang" value="en"/>
          </Stream></Connect>
          <Dial>+15551112222</Dial>
          <Gather/>
          <Redirect method="GET">/again</Redirect>
          <Hangup/>
        </Response>"""
    )
    assert doc[0] == Say("Hi there", loop=2)
    assert doc[1] == Pause(2.0)
    connect = doc[2]
    assert isinstance(connect, Connect) and connect.action == "https://app/next"
    assert connect.stream is not None
    assert connect.stream.parameters == (("session", "abc"), ("lang", "en"))
    assert connect.stream.status_callback == "https://app/s"
    assert doc[3:] == (
        Dial("+15551112222"),
        Unsupported("Gather"),
        Redirect("/again", "GET"),
        Hangup(),
    )


def test_stream_parameters_at_or_over_the_size_limit_are_named() -> None:
    # protocols.md 1.1: name + value must be under 500 characters
    spec = StreamSpec(
        "wss://b/media", parameters=(("ok", "v" * 497), ("big", "v" * 497), ("n" * 500, ""))
    )
    assert spec.oversized_parameters() == ["big", "n" * 500]


@pytest.mark.parametrize("text", ["<Response><Say>unclosed</Response>", "<Foo/>", "", "not xml"])
def test_malformed_twiml_is_error_12100(text: str) -> None:
    with pytest.raises(TwimlError) as info:
        parse_twiml(text)
    assert info.value.code == 12100


# -- wire --------------------------------------------------------------------------------


def test_stream_writer_field_types_and_sequence() -> None:
    w = StreamWriter("MZ" + "0" * 32, "AC" + "1" * 32, "CA" + "2" * 32)
    connected = json.loads(w.connected())
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = json.loads(w.start({"k": "v"}))
    assert start["sequenceNumber"] == "1" and start["streamSid"] == w.stream_sid
    fmt = start["start"]["mediaFormat"]
    assert fmt == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["tracks"] == ["inbound"]
    m1, m2 = json.loads(w.media(b"\xff" * 160, 0)), json.loads(w.media(b"\x00" * 160, 20))
    assert (m1["sequenceNumber"], m1["media"]["chunk"], m1["media"]["timestamp"]) == ("2", "1", "0")
    assert (m2["sequenceNumber"], m2["media"]["chunk"], m2["media"]["timestamp"]) == (
        "3",
        "2",
        "20",
    )
    assert base64.b64decode(m2["media"]["payload"]) == b"\x00" * 160
    assert len(m1["media"]["payload"]) == 216
    dtmf = json.loads(w.dtmf("7"))
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "7"}
    assert dtmf["sequenceNumber"] == "4"
    assert json.loads(w.mark("x"))["sequenceNumber"] == "5"
    stop = json.loads(w.stop())
    assert stop["sequenceNumber"] == "6" and stop["stop"]["callSid"] == w.call_sid


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"AAA="}}', AudioReceived),
        ('{"event":"mark","streamSid":"MZ1","mark":{"name":"n"}}', MarkReceived),
        ('{"event":"clear","streamSid":"MZ1"}', ClearReceived),
        ('{"event":"media","media":{}}', Ignored),
        ('{"event":"mark","mark":{}}', Ignored),
        ('{"event":"media","media":{"payload":"***"}}', Rejected),
        ('{"event":"bogus"}', Rejected),
        ("[1]", Rejected),
        ("nope", Rejected),
        (b"\x00", Rejected),
    ],
)
def test_parse_server_message(text: str | bytes, kind: type) -> None:
    assert isinstance(parse_server_message(text)[0], kind)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"AAA="}}', None),
        ('{"event":"media","media":{"payload":"AAA="}}', "missing_stream_sid"),
        ('{"event":"mark","streamSid":7,"mark":{"name":"n"}}', "missing_stream_sid"),
        ('{"event":"clear"}', "missing_stream_sid"),
        ('{"event":"clear","streamSid":"MZ2"}', "stream_sid_mismatch"),
        ('{"event":"mark","mark":{}}', None),  # ignored anyway: no sid check
        ('{"event":"bogus"}', None),
    ],
)
def test_stream_sid_problem(text: str, problem: str | None) -> None:
    found = stream_sid_problem(parse_server_message(text)[0], "MZ1")
    assert (found[0] if found else None) == problem


def test_error_body_and_dates() -> None:
    assert ApiError.too_many_requests().body() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    from datetime import UTC, datetime

    assert (
        rfc2822(datetime(2010, 8, 31, 20, 36, 28, tzinfo=UTC)) == "Tue, 31 Aug 2010 20:36:28 +0000"
    )


def test_caller_a_reply_after_a_clear_is_a_new_reply() -> None:
    script = _script(
        CallerTurn(clip=Path("b"), at_ms=100), CallerTurn(clip=Path("b"), barge_in_ms=40)
    )
    script.on_playout(RunStarted(50.0))
    assert script.frame(100).audio[0] == 0x20  # first turn: 100..120 ms
    script.on_playout(RunEnded(110.0, "cleared"))  # the agent was interrupted
    script.on_playout(RunStarted(130.0))  # 20 ms later: a new reply, not the cut one resumed
    assert script.frame(140).audio[0] == 0xFF
    assert script.frame(160).audio[0] == 0xFF
    assert script.frame(180).audio[0] == 0x20  # 40 ms into the new reply


def test_caller_a_reply_after_a_caller_turn_is_a_new_reply() -> None:
    script = _script(
        CallerTurn(clip=Path("b"), after_agent_ms=0), CallerTurn(clip=Path("b"), barge_in_ms=100)
    )
    script.on_playout(RunStarted(0.0))
    script.on_playout(RunEnded(40.0, "drained"))
    assert script.frame(40).audio[0] == 0x20  # turn one answers at once
    script.on_playout(RunStarted(100.0))  # within the gap, but an answer to turn one
    assert script.frame(180).audio[0] == 0xFF
    assert script.frame(200).audio[0] == 0x20
