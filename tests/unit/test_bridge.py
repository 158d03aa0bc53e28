"""The bridge with both real cores, driven with wire text from both peers.

``Phone`` plays Twilio's part (it keeps the frames and marks we sent and
echoes marks as it "plays" them, or all at once on ``clear``); ``Model``
builds Realtime server events, each validated against the SDK's union, and
checks that every client event the bridge sends validates too.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from switchboard.bridge import FRAMES_PER_MESSAGE, CallBridge
from switchboard.call_actions import (
    AgentTurnInterrupted,
    FinishCall,
    HangUp,
    HangupRequested,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    ToolFinished,
)
from switchboard.call_policy import CallPhase, PolicyConfig
from switchboard.codec import FRAME_BYTES
from switchboard.realtime_session import RealtimeSession
from switchboard.session_config import ServerVad, SessionConfig, ToolSpec

CLIENT = pydantic.TypeAdapter(RealtimeClientEvent)
SERVER = pydantic.TypeAdapter(RealtimeServerEvent)
STREAM = "MZ" + "a" * 32
CALL = "CA" + "b" * 32
ACCOUNT = "AC" + "c" * 32


class Phone:
    """Twilio's side of the media stream, at the wire level."""

    def __init__(self) -> None:
        self.seq = itertools.count(1)
        self.chunk = itertools.count(1)
        self.buffer: list[tuple[str, Any]] = []  # ("audio", bytes) | ("mark", name)
        self.played = bytearray()
        self.clears = 0

    def start(self) -> list[str]:
        return [
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": str(next(self.seq)),
                    "start": {
                        "accountSid": ACCOUNT,
                        "streamSid": STREAM,
                        "callSid": CALL,
                        "tracks": ["inbound"],
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                        "customParameters": {"token": "t1"},
                    },
                    "streamSid": STREAM,
                }
            ),
        ]

    def media(self, audio: bytes = b"\xff" * FRAME_BYTES) -> str:
        chunk = next(self.chunk)
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(next(self.seq)),
                "media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str((chunk - 1) * 20),
                    "payload": base64.b64encode(audio).decode(),
                },
                "streamSid": STREAM,
            }
        )

    def _mark(self, name: str) -> str:
        return json.dumps(
            {
                "event": "mark",
                "sequenceNumber": str(next(self.seq)),
                "streamSid": STREAM,
                "mark": {"name": name},
            }
        )

    def take(self, frames: list[str]) -> None:
        """Receive what the bridge sent, checking each frame's documented shape."""
        for text in frames:
            msg = json.loads(text)
            assert msg["streamSid"] == STREAM
            match msg["event"]:
                case "media":
                    assert set(msg) == {"event", "streamSid", "media"}
                    assert set(msg["media"]) == {"payload"}
                    self.buffer.append(("audio", base64.b64decode(msg["media"]["payload"])))
                case "mark":
                    assert set(msg) == {"event", "streamSid", "mark"}
                    self.buffer.append(("mark", msg["mark"]["name"]))
                case "clear":
                    assert set(msg) == {"event", "streamSid"}
                    self.clears += 1
                case other:
                    pytest.fail(f"unexpected event {other!r} sent to Twilio")

    def play(self, nbytes: int) -> list[str]:
        """Play up to ``nbytes`` of buffered audio; echo the marks reached."""
        echoes = []
        while self.buffer:
            kind, value = self.buffer[0]
            if kind == "mark":
                echoes.append(self._mark(value))
            elif nbytes >= len(value):
                nbytes -= len(value)
                self.played += value
            else:
                break
            self.buffer.pop(0)
        return echoes

    def clear(self) -> list[str]:
        """What Twilio does on `clear`: drop the audio, echo every pending mark."""
        marks = [self._mark(value) for kind, value in self.buffer if kind == "mark"]
        self.buffer.clear()
        return marks


class Model:
    """Builds Realtime server events, validated against the SDK's union."""

    def __init__(self) -> None:
        self.ids = itertools.count(1)

    def event(self, type_: str, **fields: Any) -> str:
        data = {"type": type_, "event_id": f"event_{next(self.ids)}", **fields}
        SERVER.validate_python(data)
        return json.dumps(data)

    def session_updated(self) -> str:
        return self.event(
            "session.updated",
            session={
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                },
            },
        )

    def response(self, status: str, rid: str = "resp_1", reason: str | None = None) -> str:
        kind = "response.created" if status == "in_progress" else "response.done"
        details = {"type": status, "reason": reason} if reason else None
        return self.event(
            kind,
            response={
                "id": rid,
                "object": "realtime.response",
                "status": status,
                "status_details": details,
                "output": [],
            },
        )

    def item_added(self, item_id: str, rid: str = "resp_1") -> str:
        return self.event(
            "response.output_item.added",
            response_id=rid,
            output_index=0,
            item={
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        )

    def audio(self, item_id: str, audio: bytes, rid: str = "resp_1") -> str:
        return self.event(
            "response.output_audio.delta",
            response_id=rid,
            item_id=item_id,
            output_index=0,
            content_index=0,
            delta=base64.b64encode(audio).decode(),
        )


def sent_to_model(bridge: CallBridge) -> list[dict[str, Any]]:
    events = [json.loads(text) for text in bridge.realtime_data_to_send()]
    for event in events:
        CLIENT.validate_python(event)
    return events


def answered(**config: Any) -> tuple[CallBridge, Phone, Model]:
    session = SessionConfig(
        instructions="Book a cleaning.",
        turn_detection=ServerVad(interrupt_response=False),
        tools=(ToolSpec("lookup", "Find open slots.", {"type": "object", "properties": {}}),),
    )
    bridge = CallBridge(PolicyConfig(session=session, **config))
    phone, model = Phone(), Model()
    bridge.open(0.0)
    (update,) = sent_to_model(bridge)
    assert update["type"] == "session.update"
    assert update["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    for text in phone.start():
        bridge.receive_twilio(text, 1.0)
    assert sent_to_model(bridge) == []  # the greeting waits for session.updated
    bridge.receive_realtime(model.session_updated(), 1.1)
    (greet,) = sent_to_model(bridge)
    assert greet["type"] == "response.create"
    return bridge, phone, model


def test_caller_audio_is_forwarded_untouched() -> None:
    bridge, phone, _ = answered()
    audio = bytes(range(160))
    bridge.receive_twilio(phone.media(audio), 1.2)
    (append,) = sent_to_model(bridge)
    assert append["type"] == "input_audio_buffer.append"
    assert base64.b64decode(append["audio"]) == audio


def test_reply_reaches_the_phone_in_whole_frames_with_a_mark_per_100ms() -> None:
    bridge, phone, model = answered()
    bridge.receive_realtime(model.response("in_progress"), 1.2)
    bridge.receive_realtime(model.item_added("item_1"), 1.2)
    speech = bytes(i % 251 for i in range(8 * 175))  # 175 ms: 8 frames and a tail
    bridge.receive_realtime(model.audio("item_1", speech), 1.3)
    phone.take(bridge.twilio_data_to_send())
    kinds = [kind for kind, _ in phone.buffer]
    assert kinds == ["audio", "mark"] * 2
    sizes = [len(v) for k, v in phone.buffer if k == "audio"]
    assert sizes == [FRAMES_PER_MESSAGE * FRAME_BYTES, (8 - FRAMES_PER_MESSAGE) * FRAME_BYTES]
    bridge.receive_realtime(
        model.event(
            "response.output_audio.done",
            response_id="resp_1",
            item_id="item_1",
            output_index=0,
            content_index=0,
        ),
        1.4,
    )
    phone.take(bridge.twilio_data_to_send())
    for echo in phone.play(10_000):
        bridge.receive_twilio(echo, 1.6)
    assert bytes(phone.played[: len(speech)]) == speech
    assert bridge.twilio.played_bytes("item_1") == 9 * FRAME_BYTES  # the tail was padded
    bridge.receive_realtime(model.response("completed"), 1.7)
    assert bridge.phase is CallPhase.IDLE


def test_barge_in_truncates_at_what_the_phone_played() -> None:
    bridge, phone, model = answered()
    bridge.receive_realtime(model.response("in_progress"), 1.2)
    bridge.receive_realtime(model.item_added("item_1"), 1.2)
    bridge.receive_realtime(model.audio("item_1", b"\x11" * 8000), 1.3)  # 1 s generated
    phone.take(bridge.twilio_data_to_send())
    # The phone played 100 ms by 1.40 (the first mark's echo), then 40 ms more.
    for echo in phone.play(5 * FRAME_BYTES):
        bridge.receive_twilio(echo, 1.40)
    phone.play(2 * FRAME_BYTES)
    started = model.event("input_audio_buffer.speech_started", audio_start_ms=900, item_id="u1")
    actions = bridge.receive_realtime(started, 1.44)
    assert AgentTurnInterrupted("item_1", 140, 1000) in actions
    phone.take(bridge.twilio_data_to_send())
    assert phone.clears == 1
    to_model = sent_to_model(bridge)
    assert [e["type"] for e in to_model] == ["conversation.item.truncate", "response.cancel"]
    assert to_model[0]["item_id"] == "item_1"
    assert to_model[0]["audio_end_ms"] == 140
    assert to_model[0]["content_index"] == 0
    # Twilio sends back every flushed mark: no proof of playback, nothing changes
    for echo in phone.clear():
        bridge.receive_twilio(echo, 1.45)
    # What had played when `clear` went out (interpolated past the last echo) stays.
    assert bridge.twilio.played_bytes("item_1", 1.45) == 7 * FRAME_BYTES
    # a late delta of the cut item never reaches the phone
    bridge.receive_realtime(model.audio("item_1", b"\x11" * 800), 1.46)
    assert bridge.twilio_data_to_send() == []
    bridge.receive_realtime(model.response("cancelled", reason="client_cancelled"), 1.5)
    assert bridge.phase is CallPhase.IDLE


def test_cancelled_reply_the_phone_played_out_is_not_truncated_to_zero() -> None:
    # interrupt_response off: all audio sent so far played (every mark echoed) while the
    # response still generates; the caller speaks and we cancel. The server's closing
    # events for the item must not erase what the caller heard (protocols.md 6.1, 3.6).
    bridge, phone, model = answered()
    bridge.receive_realtime(model.response("in_progress"), 1.2)
    bridge.receive_realtime(model.item_added("item_1"), 1.2)
    bridge.receive_realtime(model.audio("item_1", b"\x10" * 1600), 1.3)  # 200 ms
    phone.take(bridge.twilio_data_to_send())
    for echo in phone.play(10_000):
        bridge.receive_twilio(echo, 1.6)
    sent_to_model(bridge)
    started = model.event("input_audio_buffer.speech_started", audio_start_ms=1000, item_id="u1")
    bridge.receive_realtime(started, 1.7)
    assert [e["type"] for e in sent_to_model(bridge)] == ["response.cancel"]
    ids = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
    actions = bridge.receive_realtime(model.event("response.output_audio.done", **ids), 1.71)
    done = model.event("response.output_audio_transcript.done", transcript="Hello there", **ids)
    actions += bridge.receive_realtime(done, 1.72)
    cuts = [a for a in actions if isinstance(a, AgentTurnInterrupted)]
    assert cuts == [AgentTurnInterrupted("item_1", 200, 200)]
    assert sent_to_model(bridge) == []  # nothing unheard: no truncate
    assert bridge.twilio_data_to_send() == []


def test_tool_call_round_trip() -> None:
    bridge, _, model = answered()
    bridge.receive_realtime(model.response("in_progress", "resp_2"), 2.0)
    done = model.event(
        "response.function_call_arguments.done",
        response_id="resp_2",
        item_id="item_f",
        output_index=0,
        call_id="call_1",
        name="lookup",
        arguments='{"day": "monday"}',
    )
    assert RunTool("call_1", "lookup", '{"day": "monday"}') in bridge.receive_realtime(done, 2.1)
    bridge.receive_realtime(model.response("completed", "resp_2"), 2.2)
    assert bridge.phase is CallPhase.TOOL_WAIT
    bridge.handle(ToolFinished("call_1", '{"slots": ["16:00"]}'), 2.5)
    output, create = sent_to_model(bridge)
    assert output["type"] == "conversation.item.create"
    assert output["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"slots": ["16:00"]}',
    }
    assert create["type"] == "response.create"


def test_dtmf_goes_to_the_model_as_text() -> None:
    bridge, phone, model = answered()
    bridge.receive_realtime(model.response("in_progress"), 1.2)
    bridge.receive_realtime(model.response("completed"), 1.3)
    for digit in "42#":
        bridge.receive_twilio(
            json.dumps(
                {
                    "event": "dtmf",
                    "streamSid": STREAM,
                    "sequenceNumber": str(next(phone.seq)),
                    "dtmf": {"track": "inbound_track", "digit": digit},
                }
            ),
            2.0,
        )
    item, create = sent_to_model(bridge)
    assert item["item"]["content"][0]["text"].endswith("42#]")
    assert create["type"] == "response.create"


def test_hangup_and_stop() -> None:
    bridge, _, _ = answered()
    actions = bridge.handle(HangupRequested("api"), 3.0)
    assert actions[:2] == [HangUp("api"), FinishCall("api")]
    assert bridge.next_deadline is None
    bridge2, phone2, _ = answered()
    stop = json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(next(phone2.seq)),
            "stop": {"accountSid": ACCOUNT, "callSid": CALL},
            "streamSid": STREAM,
        }
    )
    assert FinishCall("stream_stopped") in bridge2.receive_twilio(stop, 4.0)
    (late,) = bridge2.receive_twilio(phone2.media(), 4.1)  # rejected by the core, noted
    assert isinstance(late, ProblemNoted)
    assert late.reason == "after_stop"
    assert sent_to_model(bridge2) == []


def test_garbage_from_either_side_never_raises() -> None:
    bridge, _, _ = answered(max_peer_errors=4)
    for text in ["", "{", "[]", '{"event": 5}', b"\x00\xff"]:
        bridge.receive_twilio(text, 2.0)
    actions = bridge.receive_realtime('{"type": "response.output_audio.delta"}', 2.1)
    assert HangUp("realtime_protocol_errors") in actions or bridge.phase is CallPhase.ENDED


def test_deadlines_run_through_the_bridge() -> None:
    bridge, _, model = answered(caller_silence_s=5.0)
    bridge.receive_realtime(model.response("in_progress"), 1.2)
    bridge.receive_realtime(model.response("completed"), 1.3)
    assert bridge.next_deadline == pytest.approx(6.3)
    assert bridge.tick(6.3) == [PhaseChanged("idle", "thinking")]
    (nudge,) = sent_to_model(bridge)
    assert nudge["type"] == "response.create"
    assert "still there" in nudge["response"]["instructions"]


def test_renewal_starts_a_new_session_with_the_call_so_far() -> None:
    bridge, phone, model = answered(
        session_max_s=100.0, session_renew_margin_s=10.0, caller_silence_s=1000.0
    )
    created = model.event(
        "session.created",
        session={
            "type": "realtime",
            "id": "sess_1",
            "object": "realtime.session",
            "model": "gpt-realtime",
        },
    )
    bridge.receive_realtime(created, 1.2)
    bridge.receive_realtime(model.response("in_progress"), 1.3)
    bridge.receive_realtime(model.item_added("item_G"), 1.3)
    bridge.receive_realtime(model.audio("item_G", b"\x01" * FRAME_BYTES), 1.3)
    done = model.event(
        "response.output_audio_transcript.done",
        response_id="resp_1",
        item_id="item_G",
        output_index=0,
        content_index=0,
        transcript="Hello, this is Ava.",
    )
    bridge.receive_realtime(done, 1.4)
    bridge.receive_realtime(model.response("completed"), 1.5)
    phone.take(bridge.twilio_data_to_send())
    old_core = bridge.realtime
    for echo in phone.play(FRAME_BYTES):
        bridge.receive_twilio(echo, 2.0)
    assert bridge.phase is CallPhase.IDLE
    assert bridge.realtime is old_core
    actions = bridge.tick(91.2)  # 100 s cap, renewed 10 s before it
    assert [type(a) for a in actions] == [RenewSession]
    assert bridge.realtime is not old_core
    update, note, greeting = sent_to_model(bridge)  # all of it for the new socket
    assert update["type"] == "session.update"
    assert update["session"] == json.loads(old_core_update(bridge))["session"]
    assert note["item"]["role"] == "system"
    assert greeting["item"]["role"] == "assistant"
    assert greeting["item"]["content"] == [{"type": "output_text", "text": "Hello, this is Ava."}]
    bridge.receive_twilio(phone.media(), 91.3)
    (audio,) = sent_to_model(bridge)
    assert audio["type"] == "input_audio_buffer.append"


def old_core_update(bridge: CallBridge) -> str:
    """The session.update a fresh core sends for this call's configuration."""
    core = RealtimeSession()
    core.configure(bridge.policy.config.session)
    update = json.loads(core.data_to_send()[0])
    update.pop("event_id")
    return json.dumps(update)
