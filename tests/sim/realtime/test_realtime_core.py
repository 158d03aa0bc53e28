"""The session core driven with literal times (no sockets): protocols.md 3.1-3.8.

Every event the core emits is validated against the SDK's full
``RealtimeServerEvent`` union by ``CoreDriver``.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from sim.realtime.options import EmulatorOptions
from sim.realtime.responses import Pacing
from sim.realtime.vad import threshold_dbfs
from sim.scenario import parse_scenario
from sim.testing_realtime import (
    WALL,
    CoreDriver,
    clip_bytes,
    event_types,
    first_event,
    without_deltas,
)
from switchboard.codec import mulaw_decode

SILENCE = b"\xff"


def speech_bounds_ms(clip: bytes) -> tuple[int, int]:
    """First and last loud 10 ms frame of a clip, by the documented -40 dBFS rule."""
    pcm = mulaw_decode(clip).astype(np.float64)
    frames = pcm[: len(pcm) // 80 * 80].reshape(-1, 80)
    loud = 10 * np.log10(np.maximum((frames**2).mean(axis=1), 1e-9) / 32768**2) >= threshold_dbfs(
        0.5
    )
    onset = next(i for i in range(len(loud) - 1) if loud[i] and loud[i + 1])
    last = int(max(np.nonzero(loud)[0]))
    return onset * 10, (last + 1) * 10


def caller_turn(name: str = "caller_question", lead_ms: int = 1000, tail_ms: int = 1000) -> bytes:
    return SILENCE * (lead_ms * 8) + clip_bytes(name) + SILENCE * (tail_ms * 8)


# -- session ------------------------------------------------------------------------


def test_session_created_then_conversation_created_with_ga_defaults() -> None:
    d = CoreDriver()
    assert event_types(d.sent) == ["session.created", "conversation.created"]
    session = d.sent[0]["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime-2025-08-28"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["expires_at"] == int(WALL) + 3600
    assert session["id"].startswith("sess_")
    assert d.sent[1]["conversation"]["object"] == "realtime.conversation"
    assert all(e["event_id"].startswith("event_") for e in d.sent)


def test_session_update_merges_only_what_was_sent_and_answers_in_full() -> None:
    d = CoreDriver()
    update = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    (updated,) = d.send({"type": "session.update", "session": update})
    session = updated["session"]
    assert updated["type"] == "session.updated"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["instructions"] == d.sent[0]["session"]["instructions"]
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
    (again,) = d.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.7}}},
            },
        }
    )
    td = again["session"]["audio"]["input"]["turn_detection"]
    assert (td["threshold"], td["silence_duration_ms"]) == (0.7, 200)
    assert again["session"]["instructions"] == "Be brief."
    assert again["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}


def test_turn_detection_null_then_semantic_vad_starts_from_its_defaults() -> None:
    d = CoreDriver()
    (off,) = d.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    assert off["session"]["audio"]["input"]["turn_detection"] is None
    (on,) = d.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}
                },
            },
        }
    )
    assert on["session"]["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }


def test_switching_vad_type_starts_from_the_new_types_defaults() -> None:
    d = CoreDriver()  # starts with server_vad at silence_duration_ms 200

    def turn_detection(value: dict[str, object]) -> object:
        update = {"type": "realtime", "audio": {"input": {"turn_detection": value}}}
        (updated,) = d.send({"type": "session.update", "session": update})
        return updated["session"]["audio"]["input"]["turn_detection"]

    assert turn_detection({"type": "semantic_vad"}) == {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    }
    back = turn_detection({"type": "server_vad", "threshold": 0.6})
    assert back == {
        "type": "server_vad",
        "threshold": 0.6,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,  # server_vad's default, not the 200 it had before
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def test_voice_is_locked_once_audio_was_produced() -> None:
    d = CoreDriver()
    voice = {"type": "realtime", "audio": {"output": {"voice": "cedar"}}}
    assert event_types(d.send({"type": "session.update", "session": voice})) == ["session.updated"]
    d.send({"type": "response.create"})
    d.advance(5)
    voice["audio"]["output"]["voice"] = "alloy"  # type: ignore[index]
    (error,) = d.send({"type": "session.update", "session": voice, "event_id": "evt_1"})
    assert error["error"]["code"] == "cannot_update_voice"
    assert error["error"]["event_id"] == "evt_1"
    assert d.core.config.data["audio"]["output"]["voice"] == "cedar"
    assert d.core.close is None


def test_model_cannot_change_but_may_be_repeated() -> None:
    d = CoreDriver()
    same = {"type": "realtime", "model": "gpt-realtime"}
    assert event_types(d.send({"type": "session.update", "session": same})) == ["session.updated"]
    (error,) = d.send({"type": "session.update", "session": {"type": "realtime", "model": "x"}})
    assert error["error"]["param"] == "session.model"


def test_the_session_type_cannot_change_and_nothing_of_the_update_applies() -> None:
    d = CoreDriver()
    update = {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    (error,) = d.send({"type": "session.update", "session": update, "event_id": "evt_2"})
    assert error["type"] == "error"
    assert error["error"]["code"] == "invalid_value"
    assert (error["error"]["param"], error["error"]["event_id"]) == ("session.type", "evt_2")
    assert d.core.config.data["type"] == "realtime"
    assert d.core.config.data["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert d.core.close is None
    (updated,) = d.send({"type": "session.update", "session": {"type": "realtime"}})
    assert updated["session"]["type"] == "realtime"


def test_beta_shaped_session_update_is_refused_and_closes_4000() -> None:
    d = CoreDriver()
    (error,) = d.send(
        {"type": "session.update", "session": {"modalities": ["audio"], "voice": "alloy"}}
    )
    assert error["error"]["code"] == "beta_api_shape_disabled"
    assert d.core.close == (4000, "invalid_request_error.beta_api_shape_disabled")
    assert d.send({"type": "response.create"}) == []


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"event_id": "e1"}', "invalid_event"),
        ('{"type": "response.audio.delta"}', "invalid_value"),
        ('{"type": "conversation.item.truncate", "item_id": "x"}', "missing_required_parameter"),
        ('{"type": "response.create", "response": {"colour": 1}}', "unknown_parameter"),
        ('{"type": "input_audio_buffer.append", "audio": "!!!"}', "invalid_value"),
    ],
)
def test_bad_frames_get_an_error_and_the_session_goes_on(frame: str, code: str) -> None:
    d = CoreDriver()
    (error,) = d.send(frame)
    assert error["type"] == "error"
    assert error["error"]["code"] == code
    assert d.core.close is None
    d.send({"type": "response.create"})
    assert "response.done" in event_types(d.advance(10))


def test_the_session_ends_at_its_maximum_duration() -> None:
    d = CoreDriver(max_session_s=120)
    assert d.sent[0]["session"]["expires_at"] == int(WALL) + 120
    (error,) = d.advance(121)
    assert error["error"]["code"] == "session_expired"
    assert d.core.close == (1001, "Your session hit the maximum duration of 2 minutes.")


def test_an_emulated_session_lasts_sixty_minutes_unless_told_otherwise() -> None:
    assert EmulatorOptions().max_session_s == 3600  # protocols.md 3.7


# -- the caller speaks ---------------------------------------------------------------


def test_caller_speaks_flow_with_timeline_offsets() -> None:
    d = CoreDriver()
    d.pcmu(turn_detection={"type": "server_vad", "silence_duration_ms": 500})
    onset, end = speech_bounds_ms(clip_bytes("caller_question"))
    events = d.append(caller_turn())
    started = first_event(events, "input_audio_buffer.speech_started")
    stopped = first_event(events, "input_audio_buffer.speech_stopped")
    assert started["audio_start_ms"] == 1000 + onset - 300
    assert stopped["audio_end_ms"] == 1000 + end + 500
    assert stopped["item_id"] == started["item_id"]
    names = without_deltas(events)
    i = names.index("input_audio_buffer.speech_stopped")
    assert names[i : i + 6] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
    ]
    added = first_event(events, "conversation.item.added")["item"]
    assert added["id"] == started["item_id"]
    assert added["role"] == "user"
    assert added["content"] == [{"type": "input_audio", "transcript": None}]
    committed = d.core.conversation.get(started["item_id"])
    assert committed is not None
    assert committed.audio_ms == stopped["audio_end_ms"] - started["audio_start_ms"]


@pytest.mark.parametrize("fmt", ["audio/pcm", "audio/pcma"])
def test_vad_works_on_every_input_format(fmt: str) -> None:
    import audioop

    d = CoreDriver()
    turn = caller_turn()
    pcm = audioop.ulaw2lin(turn, 2)
    if fmt == "audio/pcm":
        audio, rate = audioop.ratecv(pcm, 2, 1, 8000, 24000, None)[0], 48000
        d.send({"type": "session.update", "session": {"type": "realtime"}})
    else:
        audio, rate = audioop.lin2alaw(pcm, 2), 8000
        update = {"type": "realtime", "audio": {"input": {"format": {"type": fmt}}}}
        d.send({"type": "session.update", "session": update})
    events = d.append(audio, chunk=rate // 50, bytes_per_s=rate)
    onset, _ = speech_bounds_ms(clip_bytes("caller_question"))
    started = first_event(events, "input_audio_buffer.speech_started")
    assert abs(started["audio_start_ms"] - (1000 + onset - 300)) <= 20
    assert "input_audio_buffer.committed" in event_types(events)


@pytest.mark.parametrize(("eagerness", "turns"), [("high", 2), ("low", 1)])
def test_semantic_vad_eagerness_sets_the_silence_window(eagerness: str, turns: int) -> None:
    d = CoreDriver()
    d.pcmu(
        turn_detection={"type": "semantic_vad", "eagerness": eagerness, "create_response": False}
    )
    events = d.append(caller_turn("caller_hello", tail_ms=1500))  # ~380 ms pause inside
    assert event_types(events).count("input_audio_buffer.committed") == turns


def test_transcription_uses_the_scenario_line_of_the_clip_heard() -> None:
    scenario = parse_scenario(
        {
            "caller": [
                {"say": "First line", "clip": "caller_hello.ulaw"},
                {"say": "Monday please", "clip": "caller_question.ulaw"},
            ]
        }
    )
    d = CoreDriver(scenario)
    d.pcmu(transcription={"model": "gpt-4o-mini-transcribe"})
    events = d.append(caller_turn("caller_question")) + d.advance(1)
    completed = first_event(events, "conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "Monday please"
    assert completed["usage"]["type"] == "tokens"
    deltas = [e["delta"] for e in events if e["type"].endswith("transcription.delta")]
    assert "".join(deltas) == "Monday please"


def test_transcription_falls_back_to_built_in_clip_text_then_placeholder() -> None:
    d = CoreDriver()
    d.pcmu(transcription={"model": "whisper-1"})
    events = d.append(caller_turn("caller_yes")) + d.advance(1)
    completed = first_event(events, "conversation.item.input_audio_transcription.completed")
    assert completed["transcript"] == "Yes, four o'clock works for me."
    assert completed["usage"]["type"] == "duration"
    d.advance(10)
    noise = np.random.default_rng(1).normal(0, 3000, 8000).astype(np.int16)
    import audioop

    events = d.append(SILENCE * 4000 + audioop.lin2ulaw(noise.tobytes(), 2) + SILENCE * 8000)
    events += d.advance(1)
    completed = first_event(events, "conversation.item.input_audio_transcription.completed")
    assert completed["transcript"].startswith("(unrecognised speech")


def test_speech_interrupts_the_streaming_response() -> None:
    d = CoreDriver()
    d.pcmu()
    d.send({"type": "response.create"})
    streamed = d.advance(0.4)
    assert "response.output_audio.delta" in event_types(streamed)
    events = d.append(clip_bytes("caller_interrupt")[:3200])
    names = without_deltas(events)
    i = names.index("input_audio_buffer.speech_started")
    assert names[i : i + 7] == [
        "input_audio_buffer.speech_started",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    done = first_event(events, "response.done")["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    assert d.core.record.cancellations[0].reason == "turn_detected"


def test_without_interrupt_response_the_reply_finishes_then_the_turn_is_answered() -> None:
    d = CoreDriver()
    d.pcmu(
        turn_detection={
            "type": "server_vad",
            "interrupt_response": False,
            "silence_duration_ms": 500,
        }
    )
    d.send({"type": "response.create"})
    d.advance(0.3)
    events = d.append(caller_turn("caller_yes", lead_ms=0, tail_ms=600)) + d.advance(10)
    statuses = [e["response"]["status"] for e in events if e["type"] == "response.done"]
    assert statuses == ["completed", "completed"]
    assert len([e for e in events if e["type"] == "response.created"]) == 1  # the queued reply


def test_create_response_false_commits_without_answering() -> None:
    d = CoreDriver()
    d.pcmu(turn_detection={"type": "server_vad", "create_response": False})
    events = d.append(caller_turn()) + d.advance(5)
    assert "input_audio_buffer.committed" in event_types(events)
    assert "response.created" not in event_types(events)


def test_manual_commit_without_vad() -> None:
    d = CoreDriver()
    d.pcmu(turn_detection=None)
    (error,) = d.send({"type": "input_audio_buffer.commit"})
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert "buffer only has 0.00ms" in error["error"]["message"]
    d.append(SILENCE * 400)
    (error,) = d.send({"type": "input_audio_buffer.commit"})
    assert "50.00ms" in error["error"]["message"]
    events = d.append(caller_turn(lead_ms=0, tail_ms=0))
    assert "input_audio_buffer.speech_started" not in event_types(events)
    events = d.send({"type": "input_audio_buffer.commit"})
    assert event_types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert "response.created" not in event_types(d.advance(3))
    d.send({"type": "response.create"})
    assert "response.done" in event_types(d.advance(10))


def test_clear_empties_the_buffer() -> None:
    d = CoreDriver()
    d.pcmu(turn_detection=None)
    d.append(SILENCE * 1600)
    assert event_types(d.send({"type": "input_audio_buffer.clear"})) == [
        "input_audio_buffer.cleared"
    ]
    (error,) = d.send({"type": "input_audio_buffer.commit"})
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"


def test_idle_timeout_prompts_a_response() -> None:
    d = CoreDriver()
    d.pcmu(turn_detection={"type": "server_vad", "idle_timeout_ms": 2000})
    d.send({"type": "response.create"})
    first = d.advance(2)
    reply_ms = d.core.record.responses[0].audio_ms_sent
    assert "response.done" in event_types(first)
    assert "input_audio_buffer.timeout_triggered" not in event_types(d.advance(reply_ms / 1000))
    events = d.advance(2.1)
    names = without_deltas(events)
    assert names[:5] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]


# -- responses ---------------------------------------------------------------------


def test_audio_response_flow_and_pacing() -> None:
    d = CoreDriver(pacing=Pacing(first_audio_ms=300, chunk_ms=100, speed=4.0))
    d.pcmu()
    events = d.send({"type": "response.create"}) + d.advance(10)
    assert without_deltas(events) == [
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert audio == clip_bytes("agent_greeting")  # pcmu passes the clip through
    times = [f.t for f in d.core.record.frames if f.type == "response.output_audio.delta"]
    assert times[0] == pytest.approx(0.3)
    assert times[1] - times[0] == pytest.approx(0.1 / 4)
    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    text = "Hello! This is Ava calling from Bright Smiles Dental."
    assert transcript == text
    done = first_event(events, "response.done")["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": text}]
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_token_details"]["audio_tokens"] == len(audio) // 8 * 20 // 1000 + 1


def test_pcm_output_is_resampled_real_speech() -> None:
    d = CoreDriver()
    events = d.send({"type": "response.create"}) + d.advance(10)
    deltas = [base64.b64decode(e["delta"]) for e in events if e["type"].endswith("audio.delta")]
    assert len(deltas[0]) == 100 * 48
    assert sum(map(len, deltas)) == len(clip_bytes("agent_greeting")) * 6
    assert first_event(events, "response.created")["response"]["audio"]["output"]["format"] == {
        "type": "audio/pcm",
        "rate": 24000,
    }


def test_text_modality_streams_output_text() -> None:
    d = CoreDriver()
    d.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    events = d.advance(10)
    assert "response.output_audio.delta" not in event_types(events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello! This is Ava calling from Bright Smiles Dental."
    assert first_event(events, "response.output_text.done")["text"] == text
    done = first_event(events, "response.done")["response"]
    assert done["output"][0]["content"] == [{"type": "output_text", "text": text}]


def test_max_output_tokens_cuts_the_reply_short() -> None:
    d = CoreDriver()
    d.pcmu()
    d.send({"type": "response.create", "response": {"max_output_tokens": 30}})
    events = d.advance(10)
    done = first_event(events, "response.done")["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    sent = sum(len(base64.b64decode(e["delta"])) for e in events if e["type"].endswith("o.delta"))
    assert 0 < sent < len(clip_bytes("agent_greeting"))


def test_events_due_before_a_client_frame_come_out_before_its_answer() -> None:
    d = CoreDriver()
    d.send({"type": "response.create"})
    # The reply finished long before this frame arrives, with no tick in between.
    events = d.send({"type": "input_audio_buffer.clear"}, dt=10)
    types = event_types(events)
    assert "response.done" in types
    assert types[-1] == "input_audio_buffer.cleared"


def test_response_create_while_active_is_refused() -> None:
    d = CoreDriver()
    d.send({"type": "response.create"})
    events = d.send({"type": "response.create"}, dt=0.1)
    (error,) = [e for e in events if e["type"] == "error"]
    rid = d.core.record.responses[0].response_id
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert rid in error["error"]["message"]
    assert len(d.core.record.responses) == 1


def test_cancel_active_and_cancel_idle() -> None:
    d = CoreDriver()
    d.send({"type": "response.create"})
    d.advance(0.5)
    events = d.send({"type": "response.cancel"})
    done = first_event(events, "response.done")["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    (error,) = d.send({"type": "response.cancel"})
    assert error["error"]["code"] == "response_cancel_not_active"
    assert error["error"]["message"] == "Cancellation failed: no active response found"
    d.send({"type": "response.create"})
    assert "response.done" in event_types(d.advance(10))


def test_out_of_band_response_stays_out_of_the_conversation() -> None:
    d = CoreDriver()
    d.send(
        {"type": "response.create", "response": {"conversation": "none", "metadata": {"k": "v"}}}
    )
    events = d.advance(10)
    assert "conversation.item.added" not in event_types(events)
    done = first_event(events, "response.done")["response"]
    assert done["conversation_id"] is None
    assert done["metadata"] == {"k": "v"}
    assert len(d.core.conversation) == 0


# -- function calls ------------------------------------------------------------------

TOOL = {
    "type": "function",
    "name": "check_availability",
    "description": "Look up free slots",
    "parameters": {"type": "object", "properties": {"day": {"type": "string"}}},
}


def test_tool_call_flow_waits_for_output_and_response_create() -> None:
    scenario = parse_scenario(
        {
            "assistant": [
                {"tool_call": {"name": "check_availability", "arguments": {"day": "monday"}}},
                {"say": "Monday at four works."},
            ]
        }
    )
    d = CoreDriver(scenario)
    d.send({"type": "session.update", "session": {"type": "realtime", "tools": [TOOL]}})
    events = d.send({"type": "response.create"}) + d.advance(5)
    assert without_deltas(events) == [
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    added = first_event(events, "response.output_item.added")["item"]
    assert (added["type"], added["status"], added["arguments"]) == (
        "function_call",
        "in_progress",
        "",
    )
    args_done = first_event(events, "response.function_call_arguments.done")
    assert args_done["arguments"] == '{"day": "monday"}'
    deltas = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert deltas == args_done["arguments"]
    output = first_event(events, "response.done")["response"]["output"]
    assert output[0]["call_id"] == args_done["call_id"]
    assert output[0]["status"] == "completed"
    assert d.advance(30) == []  # the model does not go on by itself
    wrong = {"type": "function_call_output", "call_id": "call_nope", "output": "{}"}
    (error,) = d.send({"type": "conversation.item.create", "item": wrong})
    assert "call_nope" in error["error"]["message"]
    right = {"type": "function_call_output", "call_id": args_done["call_id"], "output": '{"ok":1}'}
    events = d.send({"type": "conversation.item.create", "item": right})
    assert event_types(events) == ["conversation.item.added", "conversation.item.done"]
    assert d.advance(30) == []
    d.send({"type": "response.create"})
    events = d.advance(10)
    transcript = first_event(events, "response.output_audio_transcript.done")["transcript"]
    assert transcript == "Monday at four works."
    assert d.core.record.warnings == []


def test_undeclared_tool_is_flagged() -> None:
    scenario = parse_scenario({"assistant": [{"tool_call": {"name": "transfer"}}]})
    d = CoreDriver(scenario)
    d.send({"type": "response.create"})
    d.advance(5)
    assert d.core.record.warnings == ["scripted tool call 'transfer' but no such tool is declared"]


# -- items ---------------------------------------------------------------------------


def streamed_reply(d: CoreDriver, seconds: float = 10) -> str:
    d.pcmu()
    d.send({"type": "response.create"})
    events = d.advance(seconds)
    return str(first_event(events, "response.output_item.added")["item"]["id"])


def test_truncate_within_the_audio_cuts_it_and_deletes_the_transcript() -> None:
    d = CoreDriver()
    item_id = streamed_reply(d)
    events = d.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 900,
        }
    )
    assert events[0] == {
        "type": "conversation.item.truncated",
        "event_id": events[0]["event_id"],
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": 900,
    }
    record = d.core.record.truncations[0]
    assert record.accepted
    assert record.audio_ms_generated == len(clip_bytes("agent_greeting")) // 8
    assert record.transcript_before == "Hello! This is Ava calling from Bright Smiles Dental."
    assert record.transcript_after == "Hello! This is"
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    part = retrieved["item"]["content"][0]
    assert part["transcript"] == ""  # deleted: no unheard text stays in context (3.6)
    assert len(base64.b64decode(part["audio"])) == 900 * 8


def test_truncate_past_the_end_unknown_item_and_user_item_fail() -> None:
    d = CoreDriver()
    item_id = streamed_reply(d)
    generated = len(clip_bytes("agent_greeting")) // 8
    cut = {"type": "conversation.item.truncate", "content_index": 0}
    (error,) = d.send({**cut, "item_id": item_id, "audio_end_ms": generated + 1})
    assert error["error"]["message"] == (
        f"Audio content of {generated}ms is already shorter than {generated + 1}ms"
    )
    (error,) = d.send({**cut, "item_id": "item_missing", "audio_end_ms": 10})
    assert error["error"]["code"] == "item_truncate_invalid_item_id"
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    added = d.send({"type": "conversation.item.create", "item": user})[0]["item"]
    (error,) = d.send({**cut, "item_id": added["id"], "audio_end_ms": 0})
    assert error["error"]["code"] == "unsupported_content_type"
    assert [t.accepted for t in d.core.record.truncations] == [False, False, False]
    assert d.core.close is None


def test_truncating_a_cancelled_reply_is_bounded_by_the_audio_generated() -> None:
    d = CoreDriver()
    d.pcmu()
    d.send({"type": "response.create"})
    d.advance(0.45)  # first delta at 0.2 s, then one 100 ms delta per 20 ms
    d.send({"type": "response.cancel"})
    run = d.core.record.responses[0]
    assert 0 < run.audio_ms_sent < run.audio_ms_total
    cut = {"type": "conversation.item.truncate", "item_id": run.item_id, "content_index": 0}
    (error,) = d.send({**cut, "audio_end_ms": run.audio_ms_sent + 20})
    assert error["type"] == "error"
    (ok,) = d.send({**cut, "audio_end_ms": run.audio_ms_sent})
    assert ok["type"] == "conversation.item.truncated"


def truncated_mid_reply(d: CoreDriver) -> tuple[str, str, list[dict[str, object]]]:
    """Truncate the streaming reply's item at 100 ms (what a bridge does at a barge-in
    with interrupt_response off, before it cancels); its id, kept transcript, events."""
    d.pcmu(turn_detection=None)
    d.send({"type": "response.create"})
    out = d.advance(0.30)  # item open, two 100 ms deltas out
    item_id = str(first_event(out, "response.output_item.added")["item"]["id"])
    spoken = "".join(
        str(e["delta"]) for e in out if e["type"] == "response.output_audio_transcript.delta"
    )
    assert len([e for e in out if e["type"] == "response.output_audio.delta"]) >= 2
    cut = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
    (truncated,) = d.send({**cut, "audio_end_ms": 100})
    assert truncated["type"] == "conversation.item.truncated"
    record = d.core.record.truncations[-1]
    assert record.accepted and record.transcript_before == spoken
    kept = str(record.transcript_after)
    assert kept == "Hello!"  # the words that start within the first 100 ms
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    part = retrieved["item"]["content"][0]
    assert part["transcript"] == ""  # the service deletes it (3.6); the record keeps `kept`
    assert len(base64.b64decode(part["audio"])) == 100 * 8
    return item_id, kept, out


def test_truncating_a_streaming_reply_then_cancelling_keeps_the_cut() -> None:
    d = CoreDriver()
    item_id, _, _ = truncated_mid_reply(d)
    done = first_event(d.send({"type": "response.cancel"}), "response.done")
    assert done["response"]["status"] == "cancelled"
    (output,) = done["response"]["output"]
    assert output["id"] == item_id
    assert output["content"] == [{"type": "output_audio", "transcript": ""}]
    item = d.core.conversation.get(item_id)
    assert item is not None and item.audio_ms == 100
    assert item.data["content"] == [{"type": "output_audio", "transcript": ""}]


def test_a_truncated_reply_streams_on_but_nothing_more_is_added_to_its_item() -> None:
    d = CoreDriver()
    item_id, _, _ = truncated_mid_reply(d)
    later = d.advance(10)
    # The service keeps generating (clients drop a cut item's deltas, protocols.md 6.8) ...
    assert any(e["type"] == "response.output_audio.delta" for e in later)
    part_done = first_event(later, "response.content_part.done")
    assert part_done["part"] == {"type": "audio", "transcript": ""}
    item_done = first_event(later, "response.output_item.done")
    assert item_done["item"]["content"] == [{"type": "output_audio", "transcript": ""}]
    done = first_event(later, "response.done")
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"] == [{"type": "output_audio", "transcript": ""}]
    # ... but the item stays frozen at the cut.
    (retrieved,) = d.send({"type": "conversation.item.retrieve", "item_id": item_id})
    part = retrieved["item"]["content"][0]
    assert part["transcript"] == ""
    assert len(base64.b64decode(part["audio"])) == 100 * 8


def test_item_create_delete_retrieve() -> None:
    d = CoreDriver()
    system = {
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": "Be kind."}],
    }
    events = d.send({"type": "conversation.item.create", "item": {**system, "id": "item_sys"}})
    assert events[0]["item"]["object"] == "realtime.item"
    assert events[0]["item"]["status"] == "completed"
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    events = d.send({"type": "conversation.item.create", "item": user, "previous_item_id": "root"})
    assert events[0]["previous_item_id"] is None
    assert [i.id for i in d.core.conversation][1] == "item_sys"
    (dup,) = d.send({"type": "conversation.item.create", "item": {**system, "id": "item_sys"}})
    assert dup["type"] == "error"
    (bad_prev,) = d.send(
        {"type": "conversation.item.create", "item": user, "previous_item_id": "x"}
    )
    assert bad_prev["error"]["param"] == "previous_item_id"
    audio = {"type": "message", "role": "assistant", "content": [{"type": "output_audio"}]}
    (error,) = d.send({"type": "conversation.item.create", "item": audio})
    assert error["error"]["message"] == "Missing required parameter: 'item.content[0].text'."
    assert event_types(d.send({"type": "conversation.item.delete", "item_id": "item_sys"})) == [
        "conversation.item.deleted"
    ]
    (error,) = d.send({"type": "conversation.item.delete", "item_id": "item_sys"})
    assert error["error"]["code"] == "item_delete_invalid_item_id"
    (error,) = d.send({"type": "conversation.item.retrieve", "item_id": "item_sys"})
    assert error["error"]["code"] == "item_retrieve_invalid_item_id"


def test_output_audio_buffer_clear_is_for_sip_sessions_only() -> None:
    d = CoreDriver()
    (error,) = d.send({"type": "output_audio_buffer.clear"})
    assert error["type"] == "error"
    sip = CoreDriver(call_id="rtc_123", model=None)
    assert event_types(sip.send({"type": "output_audio_buffer.clear"})) == [
        "output_audio_buffer.cleared"
    ]


def test_assistant_turns_given_as_history_move_the_script_on() -> None:
    scenario = parse_scenario(
        {"assistant": [{"say": "Hello! This is Ava."}, {"say": "Tuesday at four works."}]}
    )
    d = CoreDriver(scenario)
    d.pcmu()
    greeting = {"type": "output_text", "text": "Hello! This is Ava."}
    item = {"type": "message", "role": "assistant", "content": [greeting]}
    added = d.send({"type": "conversation.item.create", "item": item})
    assert first_event(added, "conversation.item.added")["item"]["content"] == [greeting]
    d.send({"type": "response.create"})
    events = d.advance(10)
    done = first_event(events, "response.done")["response"]
    assert done["output"][0]["content"][0]["transcript"] == "Tuesday at four works."
