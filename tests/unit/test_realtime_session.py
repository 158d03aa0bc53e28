"""RealtimeSession: the sans-I/O OpenAI Realtime GA core (protocols.md 3.3-3.6, 6).

Every server event fed here is first validated against the SDK's GA
``RealtimeServerEvent`` union, and every client frame the core produces is
validated against ``RealtimeClientEvent`` plus a strict key diff, so the
fixtures cannot drift from the real protocol.
"""

from __future__ import annotations

import base64
import itertools
import json
from typing import get_args

import orjson
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai._models import BaseModel
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from switchboard.errors import LocalProtocolError, RealtimeProtocolError
from switchboard.realtime_events import (
    AudioDelta,
    AudioDone,
    FunctionCallRequested,
    InputCommitted,
    InputTranscriptCompleted,
    InputTranscriptDelta,
    InputTranscriptFailed,
    ItemTruncated,
    OutputItemAdded,
    RealtimeErrorReported,
    RealtimeEvent,
    RealtimeEventIgnored,
    RealtimeMessageRejected,
    ResponseDone,
    ResponseStarted,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    Usage,
)
from switchboard.realtime_parser import BETA_EVENT_TYPES, IGNORED_EVENT_TYPES
from switchboard.realtime_session import RealtimeSession, decoded_length
from switchboard.session_config import SessionConfig, ToolSpec

SERVER = pydantic.TypeAdapter(RealtimeServerEvent)
CLIENT = pydantic.TypeAdapter(RealtimeClientEvent)
EVENT_CLASSES: tuple[type, ...] = get_args(RealtimeEvent)
_ids = itertools.count(1)


def _types(union: object) -> set[str]:
    members = get_args(get_args(union)[0])
    return {get_args(m.model_fields["type"].annotation)[0] for m in members}


GA_SERVER_TYPES = _types(RealtimeServerEvent)


# -- helpers that speak the protocol ------------------------------------------


def assert_no_extras(model: BaseModel, path: str = "") -> None:
    """The SDK models allow unknown fields; diff keys against model_fields (protocols.md 4.5)."""
    assert not model.model_extra, f"unknown fields at {path or '<root>'}: {model.model_extra}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, BaseModel):
                assert_no_extras(child, f"{path}.{name}")


def wire(event: dict[str, object]) -> str:
    """A server frame, checked against the GA union first so fixtures stay honest."""
    SERVER.validate_python(event)
    return orjson.dumps(event).decode()


def feed(session: RealtimeSession, event: dict[str, object], now: float = 0.0) -> RealtimeEvent:
    events = session.receive(wire(event), now)
    assert len(events) == 1
    return events[0]


def sent(session: RealtimeSession) -> list[dict[str, object]]:
    """Drain the client frames, each validated strictly as a GA client event."""
    frames = []
    for text in session.data_to_send():
        frame = orjson.loads(text)
        assert_no_extras(CLIENT.validate_python(frame))
        frames.append(frame)
    return frames


def strip_ids(frames: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in frame.items() if k != "event_id"} for frame in frames]


def eid() -> str:
    return f"event_{next(_ids)}"


def b64(size: int) -> str:
    return base64.b64encode(bytes(range(256)) * (size // 256) + bytes(size % 256)).decode()


def response_event(kind: str, rid: str, status: str, **extra: object) -> dict[str, object]:
    response: dict[str, object] = {
        "object": "realtime.response",
        "id": rid,
        "status": status,
        "status_details": None,
        "output": [],
        "conversation_id": "conv_1",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "usage": None,
        "metadata": None,
    }
    response.update(extra)
    return {"type": kind, "event_id": eid(), "response": response}


def created(rid: str) -> dict[str, object]:
    return response_event("response.created", rid, "in_progress")


def done(rid: str, status: str = "completed", **extra: object) -> dict[str, object]:
    return response_event("response.done", rid, status, **extra)


def item_added(rid: str, item: dict[str, object]) -> dict[str, object]:
    return {
        "type": "response.output_item.added",
        "event_id": eid(),
        "response_id": rid,
        "output_index": 0,
        "item": item,
    }


def message_added(rid: str, item_id: str) -> dict[str, object]:
    item: dict[str, object] = {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    return item_added(rid, item)


def part(kind: str, rid: str, item_id: str, **fields: object) -> dict[str, object]:
    event: dict[str, object] = {"type": kind, "event_id": eid(), "response_id": rid}
    event.update(item_id=item_id, output_index=0, content_index=0, **fields)
    return event


def delta(rid: str, item_id: str, audio: str) -> dict[str, object]:
    return part("response.output_audio.delta", rid, item_id, delta=audio)


def session_updated(voice: object = "marin") -> dict[str, object]:
    config = SessionConfig(instructions="x").to_session_payload()
    config["audio"]["output"]["voice"] = voice  # type: ignore[index]
    return {"type": "session.updated", "event_id": eid(), "session": config}


def session_formats(input_format: object, output_format: object) -> dict[str, object]:
    """A ``session.updated`` whose effective audio formats differ by direction."""
    event = session_updated()
    audio = event["session"]["audio"]  # type: ignore[index]
    audio["input"]["format"] = input_format
    audio["output"]["format"] = output_format
    return event


def function_call_done(rid: str, call_id: str, name: str = "lookup_order") -> dict[str, object]:
    return {
        "type": "response.function_call_arguments.done",
        "event_id": eid(),
        "response_id": rid,
        "item_id": f"fc_{call_id}",
        "output_index": 0,
        "call_id": call_id,
        "name": name,
        "arguments": '{"order_id": "42"}',
    }


def error_event(code: str | None, event_id: str | None = None) -> dict[str, object]:
    error = {"type": "invalid_request_error", "code": code, "message": "no", "param": None}
    error["event_id"] = event_id
    return {"type": "error", "event_id": eid(), "error": error}


@pytest.fixture
def session() -> RealtimeSession:
    rt = RealtimeSession()
    rt.configure(SessionConfig(instructions="Be brief.", tools=(LOOKUP,)))
    rt.data_to_send()
    return rt


def responding(session: RealtimeSession, rid: str = "resp_A", item_id: str = "item_A") -> None:
    """Bring the session to: response active, assistant item ``item_id`` added."""
    feed(session, created(rid))
    feed(session, message_added(rid, item_id))


LOOKUP = ToolSpec("lookup_order", "Look an order up.", {"type": "object", "properties": {}})

# -- verbatim examples from protocols.md 3.1, 3.4 and 3.6 ------------------------

# Copied character for character from protocols.md (3.1, 3.4, 3.6).
VERBATIM_TEXT: list[tuple[str, RealtimeEvent]] = [
    (
        """{"type":"session.created","event_id":"event_C9G5RJeJ2gF77mV7f2B1j",
 "session":{"type":"realtime","object":"realtime.session","id":"sess_C9G5QPteg4UIbotdKLoYQ",
  "model":"gpt-realtime-2025-08-28","output_modalities":["audio"],"instructions":"…",
  "tools":[],"tool_choice":"auto","max_output_tokens":"inf","tracing":null,"prompt":null,"expires_at":1756324625,
  "audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"transcription":null,"noise_reduction":null,
                    "turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":200,
                                      "idle_timeout_ms":null,"create_response":true,"interrupt_response":true}},
           "output":{"format":{"type":"audio/pcm","rate":24000},"voice":"marin","speed":1}},
  "include":null}}""",
        SessionCreated("sess_C9G5QPteg4UIbotdKLoYQ", "gpt-realtime-2025-08-28", 1756324625),
    ),
    (
        """{"event_id":"event_1516","type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"msg_003"}""",
        SpeechStarted("msg_003", 1000),
    ),
    (
        """{"event_id":"event_1718","type":"input_audio_buffer.speech_stopped","audio_end_ms":2000,"item_id":"msg_003"}""",
        SpeechStopped("msg_003", 2000),
    ),
    (
        """{"event_id":"event_1121","type":"input_audio_buffer.committed","previous_item_id":"msg_001","item_id":"msg_002"}""",
        InputCommitted("msg_002", "msg_001"),
    ),
    (
        """{"type":"conversation.item.added","event_id":"event_C9G8pjSJCfRNEhMEnYAVy","previous_item_id":null,
 "item":{"id":"item_C9G8pGVKYnaZu8PH5YQ9O","type":"message","status":"completed","role":"user","content":[{"type":"input_text","text":"hi"}]}}""",
        RealtimeEventIgnored("conversation.item.added"),
    ),
    (
        """{"type":"response.created","event_id":"event_C9G8pqbTEddBSIxbBN6Os","response":{"object":"realtime.response",
 "id":"resp_C9G8p7IH2WxLbkgPNouYL","status":"in_progress","status_details":null,"output":[],"conversation_id":"conv_C9G8mmBkLhQJwCon3hoJN",
 "output_modalities":["audio"],"max_output_tokens":"inf","audio":{"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"marin"}},"usage":null,"metadata":null}}""",
        ResponseStarted("resp_C9G8p7IH2WxLbkgPNouYL"),
    ),
    (
        """{"event_id":"event_3334","type":"response.output_item.added","response_id":"resp_001","output_index":0,
 "item":{"id":"msg_007","object":"realtime.item","type":"message","status":"in_progress","role":"assistant","content":[]}}""",
        OutputItemAdded("resp_001", "msg_007", "message"),
    ),
    (
        """{"event_id":"event_4950","type":"response.output_audio.delta","response_id":"resp_001","item_id":"msg_008","output_index":0,"content_index":0,"delta":"Base64EncodedAudioDelta"}""",
        AudioDelta("resp_001", "msg_008", "Base64EncodedAudioDelta"),
    ),
    (
        """{"event_id":"event_4748","type":"response.output_audio_transcript.done","response_id":"resp_001","item_id":"msg_008","output_index":0,"content_index":0,"transcript":"Hello, how can I assist you today?"}""",  # noqa: E501
        TranscriptDone("resp_001", "msg_008", "Hello, how can I assist you today?"),
    ),
    (
        """{"event_id":"event_5556","type":"response.function_call_arguments.done","response_id":"resp_002","item_id":"fc_001","output_index":0,"call_id":"call_001","name":"get_weather","arguments":"{\\"location\\": \\"San Francisco\\"}"}""",  # noqa: E501
        FunctionCallRequested(
            "resp_002", "fc_001", "call_001", "get_weather", '{"location": "San Francisco"}'
        ),
    ),
    (
        """{"event_id":"event_2526","type":"conversation.item.truncated","item_id":"msg_004","content_index":0,"audio_end_ms":1500}""",
        ItemTruncated("msg_004", 1500),
    ),
    (
        """{"event_id":"event_5758","type":"rate_limits.updated","rate_limits":[{"name":"requests","limit":1000,"remaining":999,"reset_seconds":60},{"name":"tokens","limit":50000,"remaining":49950,"reset_seconds":60}]}""",
        RealtimeEventIgnored("rate_limits.updated"),
    ),
    (
        """{"type":"response.done","event_id":"event_CCXHxcMy86rrKhBLDdqCh",
 "response":{"object":"realtime.response","id":"resp_CCXHw0UJld10EzIUXQCNh","status":"completed","status_details":null,
  "output":[{"id":"item_CCXHwGjjDUfOXbiySlK7i","type":"message","status":"completed","role":"assistant",
             "content":[{"type":"output_audio","transcript":"Loud and clear! I can hear you perfectly. How can I help you today?"}]}],
  "conversation_id":"conv_CCXHsurMKcaVxIZvaCI5m","output_modalities":["audio"],"max_output_tokens":"inf",
  "audio":{"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"alloy"}},
  "usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121,
           "input_token_details":{"text_tokens":119,"audio_tokens":13,"image_tokens":0,"cached_tokens":64,
                                  "cached_tokens_details":{"text_tokens":64,"audio_tokens":0,"image_tokens":0}},
           "output_token_details":{"text_tokens":30,"audio_tokens":91}},
  "metadata":null}}""",  # noqa: E501
        ResponseDone(
            "resp_CCXHw0UJld10EzIUXQCNh",
            "completed",
            None,
            Usage(253, 132, 121, 13, 119, 64, 91, 30),
        ),
    ),
    (
        """{"event_id":"event_890","type":"error","error":{"type":"invalid_request_error","code":"invalid_event",
 "message":"The 'type' field is missing.","param":null,"event_id":"event_567"}}""",
        RealtimeErrorReported(
            "invalid_request_error",
            "invalid_event",
            "The 'type' field is missing.",
            None,
            "event_567",
        ),
    ),
]
VERBATIM: list[tuple[dict[str, object], RealtimeEvent]] = [
    (orjson.loads(text), expected) for text, expected in VERBATIM_TEXT
]


# -- constructed events for the other types the bridge acts on -------------------

CONSTRUCTED: list[tuple[dict[str, object], RealtimeEvent]] = [
    (session_updated(), SessionUpdated("audio/pcmu", "audio/pcmu", "marin")),
    (session_updated({"id": "voice_123"}), SessionUpdated("audio/pcmu", "audio/pcmu", "voice_123")),
    (session_updated(None), SessionUpdated("audio/pcmu", "audio/pcmu", None)),
    # Which is which: the policy ends a call whose session is not mu-law both ways.
    (
        session_formats({"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcmu"}),
        SessionUpdated("audio/pcm", "audio/pcmu", "marin"),
    ),
    (
        session_formats({"type": "audio/pcmu"}, {"type": "audio/pcma"}),
        SessionUpdated("audio/pcmu", "audio/pcma", "marin"),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "event_id": "event_1",
            "item_id": "item_U",
            "content_index": 0,
            "delta": "Hel",
        },
        InputTranscriptDelta("item_U", "Hel"),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "event_id": "event_1",
            "item_id": "item_U",
        },
        InputTranscriptDelta("item_U", ""),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": "event_2",
            "item_id": "item_U",
            "content_index": 0,
            "transcript": "Hello.",
            "usage": {"type": "tokens", "total_tokens": 9, "input_tokens": 7, "output_tokens": 2},
        },
        InputTranscriptCompleted("item_U", "Hello."),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.failed",
            "event_id": "event_3",
            "item_id": "item_U",
            "content_index": 0,
            "error": {
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": "Audio unintelligible",
                "param": None,
            },
        },
        InputTranscriptFailed("item_U", "Audio unintelligible"),
    ),
    (
        {
            "type": "conversation.item.input_audio_transcription.failed",
            "event_id": "event_3",
            "item_id": "item_U",
            "content_index": 0,
            "error": {},
        },
        InputTranscriptFailed("item_U", ""),
    ),
    (
        part("response.output_audio_transcript.delta", "resp_1", "item_1", delta="Hi"),
        TranscriptDelta("resp_1", "item_1", "Hi"),
    ),
    (
        part("response.output_text.delta", "resp_1", "item_1", delta="Hi"),
        TranscriptDelta("resp_1", "item_1", "Hi"),
    ),
    (
        part("response.output_text.done", "resp_1", "item_1", text="Hi there"),
        TranscriptDone("resp_1", "item_1", "Hi there"),
    ),
    (part("response.output_audio.done", "resp_1", "item_1"), AudioDone("resp_1", "item_1")),
    (
        item_added(
            "resp_1",
            {
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "f",
                "arguments": "",
                "status": "in_progress",
            },
        ),
        OutputItemAdded("resp_1", "fc_1", "function_call"),
    ),
    (
        done(
            "resp_1",
            "cancelled",
            status_details={"type": "cancelled", "reason": "turn_detected"},
        ),
        ResponseDone("resp_1", "cancelled", "turn_detected", None),
    ),
    (
        done(
            "resp_1",
            "incomplete",
            status_details={"type": "incomplete"},
            usage={"total_tokens": 5, "output_tokens": 5},
        ),
        ResponseDone("resp_1", "incomplete", None, Usage(5, 0, 5)),
    ),
    (
        {"type": "error", "event_id": "e", "error": {"type": "server_error", "message": "boom"}},
        RealtimeErrorReported("server_error", None, "boom"),
    ),
]


@pytest.mark.parametrize(("event", "expected"), VERBATIM + CONSTRUCTED)
def test_server_events_parse_to_typed_events(
    event: dict[str, object], expected: RealtimeEvent
) -> None:
    assert feed(RealtimeSession(), event) == expected


def test_bytes_frames_parse_like_text() -> None:
    event, expected = VERBATIM[1]
    assert RealtimeSession().receive(wire(event).encode(), 0.0) == [expected]


# -- every other GA server event is ignored by name ------------------------------

_MSG = '{"type":"message","role":"user","content":[]}'
_PART = '"response_id":"r","item_id":"i","output_index":0,"content_index":0'
IGNORED_EXAMPLES: list[dict[str, object]] = [
    orjson.loads(text)
    for text in [
        '{"type":"conversation.created","conversation":{"id":"c","object":"realtime.conversation"}}',
        '{"type":"conversation.item.created","item":' + _MSG + "}",
        '{"type":"conversation.item.added","item":' + _MSG + "}",
        '{"type":"conversation.item.done","item":' + _MSG + "}",
        '{"type":"conversation.item.retrieved","item":' + _MSG + "}",
        '{"type":"conversation.item.deleted","item_id":"i"}',
        '{"type":"conversation.item.input_audio_transcription.segment","id":"s","item_id":"i",'
        '"content_index":0,"text":"hi","speaker":"A","start":0.0,"end":1.0}',
        '{"type":"input_audio_buffer.cleared"}',
        '{"type":"input_audio_buffer.timeout_triggered","item_id":"i","audio_start_ms":0,'
        '"audio_end_ms":10}',
        '{"type":"mcp_list_tools.completed","item_id":"i"}',
        '{"type":"mcp_list_tools.failed","item_id":"i"}',
        '{"type":"mcp_list_tools.in_progress","item_id":"i"}',
        '{"type":"output_audio_buffer.cleared","response_id":"r"}',
        '{"type":"output_audio_buffer.started","response_id":"r"}',
        '{"type":"output_audio_buffer.stopped","response_id":"r"}',
        '{"type":"rate_limits.updated","rate_limits":[]}',
        '{"type":"response.content_part.added",' + _PART + ',"part":{"type":"audio"}}',
        '{"type":"response.content_part.done",' + _PART + ',"part":{"type":"audio"}}',
        '{"type":"response.function_call_arguments.delta","response_id":"r","item_id":"i",'
        '"output_index":0,"call_id":"c","delta":"{"}',
        '{"type":"response.mcp_call.completed","item_id":"i","output_index":0}',
        '{"type":"response.mcp_call.failed","item_id":"i","output_index":0}',
        '{"type":"response.mcp_call.in_progress","item_id":"i","output_index":0}',
        '{"type":"response.mcp_call_arguments.delta","response_id":"r","item_id":"i",'
        '"output_index":0,"delta":"{"}',
        '{"type":"response.mcp_call_arguments.done","response_id":"r","item_id":"i",'
        '"output_index":0,"arguments":"{}"}',
        '{"type":"response.output_item.done","response_id":"r","output_index":0,'
        '"item":{"id":"i","type":"message","role":"assistant","content":[]}}',
    ]
]
HANDLED_TYPES = {
    str(event["type"])
    for event, expected in VERBATIM + CONSTRUCTED
    if not isinstance(expected, RealtimeEventIgnored)
}


def test_handled_and_ignored_types_partition_the_ga_server_union() -> None:
    assert HANDLED_TYPES.isdisjoint(IGNORED_EVENT_TYPES)
    assert HANDLED_TYPES | IGNORED_EVENT_TYPES == GA_SERVER_TYPES


@pytest.mark.parametrize("event", IGNORED_EXAMPLES, ids=lambda e: str(e["type"]))
def test_other_ga_server_events_are_ignored_by_name(event: dict[str, object]) -> None:
    event = {**event, "event_id": eid()}
    assert feed(RealtimeSession(), event) == RealtimeEventIgnored(str(event["type"]))


def test_dtmf_event_has_no_event_id_and_is_ignored() -> None:
    event = {"type": "input_audio_buffer.dtmf_event_received", "event": "5", "received_at": 1}
    assert feed(RealtimeSession(), event) == RealtimeEventIgnored(str(event["type"]))


def test_every_ignored_type_has_a_validated_example() -> None:
    covered = {str(e["type"]) for e in IGNORED_EXAMPLES} | {
        "input_audio_buffer.dtmf_event_received"
    }
    assert covered == IGNORED_EVENT_TYPES


# -- beta names are rejected -------------------------------------------------------


def test_beta_table_holds_every_beta_only_sdk_event_and_no_ga_one() -> None:
    assert _types(BetaServerEvent) - GA_SERVER_TYPES <= set(BETA_EVENT_TYPES)
    assert set(BETA_EVENT_TYPES).isdisjoint(GA_SERVER_TYPES)
    assert set(BETA_EVENT_TYPES.values()) <= GA_SERVER_TYPES


@pytest.mark.parametrize("beta_type", sorted(BETA_EVENT_TYPES))
def test_beta_event_names_are_rejected_naming_the_ga_name(beta_type: str) -> None:
    text = orjson.dumps({"type": beta_type, "event_id": "e", "response_id": "r", "delta": "AA=="})
    [event] = RealtimeSession().receive(text.decode(), 0.0)
    assert isinstance(event, RealtimeMessageRejected)
    assert event.error.reason == "beta_event"
    assert repr(beta_type) in event.error.message
    assert repr(BETA_EVENT_TYPES[beta_type]) in event.error.message


# -- bad input becomes RealtimeMessageRejected, never an exception -----------------

DELTA = {
    "type": "response.output_audio.delta",
    "event_id": "e",
    "response_id": "r",
    "item_id": "i",
    "output_index": 0,
    "content_index": 0,
    "delta": "AAAA",
}


def with_(base: dict[str, object], **changes: object) -> str:
    event = {**base, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not DROP}).decode()


DROP = object()
SPEECH = {
    "type": "input_audio_buffer.speech_started",
    "event_id": "e",
    "audio_start_ms": 1,
    "item_id": "i",
}
USAGE_DONE = done("r", usage={"total_tokens": 1})

_VOICE_5 = {
    "input": {"format": {"type": "audio/pcmu"}},
    "output": {"format": {"type": "audio/pcmu"}, "voice": 5},
}
_VOICE_OBJ = {
    "input": {"format": {"type": "audio/pcmu"}},
    "output": {"format": {"type": "audio/pcmu"}, "voice": {}},
}
_NO_FORMAT = '{"type":"session.updated","session":{"audio":{"input":{"format":{"type":"audio/pcmu"}},"output":{}}}}'  # noqa: E501
_HUGE_INT = (
    '{"type":"input_audio_buffer.speech_started","item_id":"i","audio_start_ms":1' + "0" * 30 + "}"
)


def _done_with(**response: object) -> str:
    return with_(USAGE_DONE, response=response)


# fmt: off
REJECTIONS: dict[str, tuple[str | bytes, str, str]] = {
    "truncated_json": ("{", "invalid_json", "not valid JSON"),
    "empty": ("", "invalid_json", "not valid JSON"),
    "not_utf8": (b'{"type":"\xff"}', "invalid_json", "not valid JSON"),
    "nan": ('{"type":"error","x":NaN}', "invalid_json", "not valid JSON"),
    "array": ("[]", "not_an_object", "expected a JSON object, got array"),
    "string": ('"error"', "not_an_object", "got string"),
    "integer": ("1", "not_an_object", "got integer"),
    "number": ("1.5", "not_an_object", "got number"),
    "null": ("null", "not_an_object", "got null"),
    "boolean": ("true", "not_an_object", "got boolean"),
    "missing_type": ('{"event_id":"e"}', "missing_field", "event: missing field 'type'"),
    "type_not_str": ('{"type":7}', "invalid_field", "field 'type' must be a string, got integer"),
    "unknown_type": ('{"type":"response.audio_delta"}', "unknown_event",
                     "unknown event type 'response.audio_delta'"),
    "audio_start_ms_str": (with_(SPEECH, audio_start_ms="1"), "invalid_field",
                           "input_audio_buffer.speech_started: field 'audio_start_ms' must be an "
                           "integer, got string"),
    "audio_start_ms_bool": (with_(SPEECH, audio_start_ms=True), "invalid_field", "got boolean"),
    "audio_start_ms_float": (with_(SPEECH, audio_start_ms=1.0), "invalid_field", "got number"),
    "audio_start_ms_huge": (_HUGE_INT, "invalid_field", "got number"),
    "speech_missing_item": (with_(SPEECH, item_id=DROP), "missing_field",
                            "input_audio_buffer.speech_started: missing field 'item_id'"),
    "delta_not_str": (with_(DELTA, delta=12), "invalid_field",
                      "response.output_audio.delta: field 'delta' must be a string, got integer"),
    "delta_null": (with_(DELTA, delta=None), "invalid_field", "got null"),
    "delta_object": (with_(DELTA, delta={}), "invalid_field", "got object"),
    "delta_missing_item": (with_(DELTA, item_id=DROP), "missing_field", "missing field 'item_id'"),
    "committed_previous_int": (
        '{"type":"input_audio_buffer.committed","item_id":"i","previous_item_id":5}',
        "invalid_field", "'previous_item_id' must be a string or null, got integer"),
    "transcription_failed_error_str": (
        '{"type":"conversation.item.input_audio_transcription.failed","item_id":"i","error":"x"}',
        "invalid_field", "field 'error' must be an object, got string"),
    "response_created_array": ('{"type":"response.created","response":[]}', "invalid_field",
                               "'response' must be an object, got array"),
    "response_created_no_id": ('{"type":"response.created","response":{}}', "missing_field",
                               "response.created: missing field 'response.id'"),
    "item_added_no_id": (with_(message_added("r", "i"), item={"type": "message"}),
                         "missing_field", "missing field 'item.id'"),
    "done_no_status": ('{"type":"response.done","response":{"id":"r"}}', "missing_field",
                       "missing field 'response.status'"),
    "done_details_str": (_done_with(id="r", status="failed", status_details="x"),
                         "invalid_field", "'response.status_details' must be an object or null"),
    "done_reason_int": (_done_with(id="r", status="failed", status_details={"reason": 1}),
                        "invalid_field", "'response.status_details.reason'"),
    "done_usage_list": (_done_with(id="r", status="completed", usage=[]),
                        "invalid_field", "'response.usage' must be an object or null"),
    "done_tokens_str": (_done_with(id="r", status="completed", usage={"total_tokens": "3"}),
                        "invalid_field",
                        "'response.usage.total_tokens' must be an integer or null, got string"),
    "done_details_tokens_float": (
        _done_with(id="r", status="completed",
                   usage={"input_token_details": {"audio_tokens": 1.5}}),
        "invalid_field", "'response.usage.input_token_details.audio_tokens'"),
    "done_output_details_str": (
        _done_with(id="r", status="completed", usage={"output_token_details": "x"}),
        "invalid_field", "'response.usage.output_token_details' must be an object or null"),
    "session_created_no_id": ('{"type":"session.created","session":{"model":"m"}}',
                              "missing_field", "missing field 'session.id'"),
    "session_created_expiry_str": (
        '{"type":"session.created","session":{"id":"s","model":"m","expires_at":"soon"}}',
        "invalid_field", "'session.expires_at' must be an integer or null, got string"),
    "session_updated_no_audio": ('{"type":"session.updated","session":{"type":"realtime"}}',
                                 "missing_field", "session.updated: missing field 'session.audio'"),
    "session_updated_no_output_format": (_NO_FORMAT, "missing_field",
                                         "missing field 'session.audio.output.format'"),
    "session_updated_format_type_int": (
        '{"type":"session.updated","session":{"audio":{"input":{"format":{"type":1}}}}}',
        "invalid_field", "'session.audio.input.format.type' must be a string"),
    "session_updated_voice_int": (
        with_(session_updated(), session={"audio": _VOICE_5}), "invalid_field",
        "'session.audio.output.voice' must be a string or null, got integer"),
    "session_updated_voice_no_id": (
        with_(session_updated(), session={"audio": _VOICE_OBJ}), "missing_field",
        "missing field 'session.audio.output.voice.id'"),
    "error_no_message": ('{"type":"error","error":{"type":"server_error"}}', "missing_field",
                         "error: missing field 'error.message'"),
    "error_code_int": ('{"type":"error","error":{"type":"t","message":"m","code":400}}',
                       "invalid_field", "'error.code' must be a string or null"),
}
# fmt: on


@pytest.mark.parametrize(("text", "reason", "needle"), REJECTIONS.values(), ids=REJECTIONS.keys())
def test_bad_frames_are_rejected_naming_what_was_wrong(
    text: str | bytes, reason: str, needle: str
) -> None:
    session = RealtimeSession()
    [event] = session.receive(text, 1.0)
    assert isinstance(event, RealtimeMessageRejected)
    assert isinstance(event.error, RealtimeProtocolError)
    assert event.error.reason == reason
    assert needle in event.error.message
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    assert event.raw_prefix == raw[:120]
    assert session.data_to_send() == []


@pytest.mark.parametrize(("as_bytes", "unit"), [(False, "characters"), (True, "bytes")])
def test_over_long_frames_are_rejected_before_parsing(as_bytes: bool, unit: str) -> None:
    session = RealtimeSession(max_message_size=100)
    frame = wire(delta("r", "i", b64(300)))
    [event] = session.receive(frame.encode() if as_bytes else frame, 0.0)
    assert isinstance(event, RealtimeMessageRejected)
    assert event.error.reason == "message_too_large"
    assert f"message of {len(frame)} {unit} exceeds the limit of 100" == event.error.message
    assert len(event.raw_prefix) == 120
    assert session.audio_bytes("i") == 0


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_frame_of_exactly_the_limit_is_parsed_one_more_is_refused(as_bytes: bool) -> None:
    text = wire(delta("r", "i", b64(300)))
    frame: str | bytes = text.encode() if as_bytes else text
    [event] = RealtimeSession(max_message_size=len(frame)).receive(frame, 0.0)
    assert isinstance(event, AudioDelta)
    [event] = RealtimeSession(max_message_size=len(frame) - 1).receive(frame, 0.0)
    assert isinstance(event, RealtimeMessageRejected)
    assert event.error.reason == "message_too_large"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KNOWN_TYPES = sorted(GA_SERVER_TYPES | set(BETA_EVENT_TYPES))
FIELD_NAMES = [
    "response_id",
    "item_id",
    "delta",
    "audio_start_ms",
    "audio_end_ms",
    "response",
    "session",
    "item",
    "error",
    "transcript",
    "text",
    "call_id",
    "name",
    "arguments",
    "previous_item_id",
    "usage",
    "id",
    "status",
    "audio",
]


def _valid_events() -> list[dict[str, object]]:
    return [event for event, _ in VERBATIM + CONSTRUCTED] + IGNORED_EXAMPLES


def _mutate(event: object, path: list[int], value: object, delete: bool) -> object:
    """Replace (or delete) one nested value, chosen by ``path`` indices."""
    if not path or not isinstance(event, dict | list) or not event:
        return value
    keys = list(event) if isinstance(event, dict) else list(range(len(event)))
    key = keys[path[0] % len(keys)]
    copy = dict(event) if isinstance(event, dict) else list(event)
    if delete and len(path) == 1 and isinstance(copy, dict):
        del copy[key]
    else:
        copy[key] = _mutate(copy[key], path[1:], value, delete)
    return copy


def _assert_one_event(session: RealtimeSession, text: str | bytes) -> RealtimeEvent:
    [event] = session.receive(text, 0.0)
    assert isinstance(event, EVENT_CLASSES)
    return event


@given(st.one_of(st.text(), st.binary()))
def test_receive_never_raises_on_arbitrary_text(text: str | bytes) -> None:
    _assert_one_event(RealtimeSession(), text)


@given(
    st.sampled_from([*KNOWN_TYPES, "x"]),
    st.dictionaries(st.sampled_from(FIELD_NAMES), JSON, max_size=6),
)
def test_receive_never_raises_on_arbitrary_objects(etype: str, fields: dict[str, object]) -> None:
    session = RealtimeSession()
    # stdlib json: it also writes integers beyond 64 bits, which orjson reads as floats.
    event = _assert_one_event(session, json.dumps({**fields, "type": etype}))
    if etype in BETA_EVENT_TYPES or etype == "x":
        assert isinstance(event, RealtimeMessageRejected)


@given(
    st.sampled_from(_valid_events()),
    st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
    JSON,
    st.booleans(),
)
def test_receive_never_raises_on_mutated_valid_events(
    event: dict[str, object], path: list[int], value: object, delete: bool
) -> None:
    session = RealtimeSession()
    responding(session, "r", "i")
    _assert_one_event(session, json.dumps(_mutate(event, path, value, delete)))


# -- client events: every builder yields a strict GA client event ----------------


def test_configure_sends_the_config_as_session_update() -> None:
    rt = RealtimeSession()
    config = SessionConfig(instructions="Be brief.", tools=(LOOKUP,), voice="cedar")
    rt.configure(config)
    [frame] = sent(rt)
    assert frame == {
        "type": "session.update",
        "event_id": "sb_evt_1",
        "session": config.to_session_payload(),
    }
    assert not rt.configured


def test_append_audio_is_a_plain_frame_without_event_id(session: RealtimeSession) -> None:
    audio = b64(160)
    session.append_audio(audio)
    session.append_audio("Base64EncodedAudioData")
    text = session.data_to_send()
    assert text[0] == '{"type":"input_audio_buffer.append","audio":"' + audio + '"}'
    session.append_audio(audio)
    assert strip_ids(sent(session)) == [{"type": "input_audio_buffer.append", "audio": audio}]
    assert orjson.loads(text[1]) == {
        "type": "input_audio_buffer.append",
        "audio": "Base64EncodedAudioData",
    }


def test_append_audio_before_configure_is_refused() -> None:
    rt = RealtimeSession()
    with pytest.raises(LocalProtocolError, match="before configure"):
        rt.append_audio("AAAA")
    assert rt.data_to_send() == []


def test_simple_builders(session: RealtimeSession) -> None:
    session.commit_audio()
    session.clear_audio()
    session.add_user_text("Greet the caller.")
    session.add_system_text("The caller is Ada.")
    frames = sent(session)
    assert strip_ids(frames) == [
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Greet the caller."}],
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "The caller is Ada."}],
            },
        },
    ]
    ids = [frame["event_id"] for frame in frames]
    assert len(set(ids)) == len(ids)


def test_data_to_send_drains_in_order(session: RealtimeSession) -> None:
    session.append_audio("AAAA")
    session.commit_audio()
    assert [orjson.loads(t)["type"] for t in session.data_to_send()] == [
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
    ]
    assert session.data_to_send() == []


# -- responses: create, cancel ----------------------------------------------------


def test_create_response_with_and_without_instructions(session: RealtimeSession) -> None:
    session.create_response()
    assert strip_ids(sent(session)) == [{"type": "response.create"}]
    assert session.response_requested
    assert session.active_response_id is None
    feed(session, created("resp_1"))
    feed(session, done("resp_1"))
    session.create_response("Greet the caller.")
    assert strip_ids(sent(session)) == [
        {"type": "response.create", "response": {"instructions": "Greet the caller."}}
    ]


def test_create_response_while_requested_or_active_raises(session: RealtimeSession) -> None:
    session.create_response()
    with pytest.raises(LocalProtocolError, match="in progress"):
        session.create_response()
    feed(session, created("resp_1"))
    with pytest.raises(LocalProtocolError, match="active resp_1"):
        session.create_response()
    feed(session, done("resp_1"))
    assert not session.response_requested
    session.create_response()
    assert len(sent(session)) == 2


def test_create_response_while_a_server_vad_response_is_active_raises(
    session: RealtimeSession,
) -> None:
    feed(session, created("resp_vad"))
    assert not session.response_requested
    with pytest.raises(LocalProtocolError):
        session.create_response()
    assert sent(session) == []


def test_cancel_is_sent_only_while_a_response_is_active(session: RealtimeSession) -> None:
    assert session.cancel_response() is False  # idle
    session.create_response()
    sent(session)
    assert session.cancel_response() is False  # only requested
    assert sent(session) == []
    feed(session, created("resp_1"))
    assert session.cancel_response() is True
    assert strip_ids(sent(session)) == [{"type": "response.cancel", "response_id": "resp_1"}]
    assert session.cancel_response() is False  # already cancelling
    assert sent(session) == []
    feed(
        session,
        done(
            "resp_1",
            "cancelled",
            status_details={"type": "cancelled", "reason": "client_cancelled"},
        ),
    )
    assert session.cancel_response() is False  # done
    feed(session, created("resp_2"))
    assert session.cancel_response() is True  # a new response can be cancelled again
    assert strip_ids(sent(session)) == [{"type": "response.cancel", "response_id": "resp_2"}]


def test_a_refused_response_create_clears_the_request(session: RealtimeSession) -> None:
    session.create_response()
    [frame] = sent(session)
    feed(session, error_event("some_other_code", event_id="sb_evt_unrelated"))
    assert session.response_requested
    feed(session, error_event("invalid_value", event_id=str(frame["event_id"])))
    assert not session.response_requested
    session.create_response()
    assert len(sent(session)) == 1


def test_already_active_error_clears_the_request_even_without_event_id(
    session: RealtimeSession,
) -> None:
    feed(session, error_event("conversation_already_has_active_response"))  # nothing requested
    assert not session.response_requested
    session.create_response()
    feed(session, error_event("conversation_already_has_active_response"))
    assert not session.response_requested


def test_a_refused_response_create_is_marked_on_the_error() -> None:
    session = RealtimeSession()
    session.create_response()
    [create] = sent(session)
    other = feed(session, error_event("invalid_value", event_id="evt_someone_else"))
    assert isinstance(other, RealtimeErrorReported) and not other.refused_response
    assert session.response_requested
    refusal = feed(session, error_event("invalid_value", event_id=str(create["event_id"])))
    assert isinstance(refusal, RealtimeErrorReported)
    assert refusal.refused_response and not refusal.refused_update
    assert not session.response_requested


# -- configured -------------------------------------------------------------------


def test_configured_tracks_the_latest_update() -> None:
    rt = RealtimeSession()
    feed(rt, session_updated())  # unsolicited: nothing of ours was acknowledged
    assert not rt.configured
    rt.configure(SessionConfig(instructions="a"))
    rt.configure(SessionConfig(instructions="b"))
    _first, _second = sent(rt)
    feed(rt, session_updated())
    assert not rt.configured  # only the first is acknowledged
    feed(rt, session_updated())
    assert rt.configured
    rt.configure(SessionConfig(instructions="c"))
    [third] = sent(rt)
    assert not rt.configured
    refusal = feed(rt, error_event("invalid_value", event_id=str(third["event_id"])))
    assert isinstance(refusal, RealtimeErrorReported) and refusal.refused_update
    assert not rt.configured  # refused: still not configured as asked
    other = feed(rt, error_event("invalid_value", event_id="evt_not_an_update"))
    assert isinstance(other, RealtimeErrorReported) and not other.refused_update
    rt.configure(SessionConfig(instructions="d"))
    rt.configure(SessionConfig(instructions="e"))
    fourth, _fifth = sent(rt)
    feed(rt, error_event("invalid_value", event_id=str(fourth["event_id"])))
    feed(rt, session_updated())
    assert rt.configured  # the latest one was accepted


# -- the full audio response flow (protocols.md 3.5) -----------------------------


def test_full_audio_response_flow() -> None:
    rt = RealtimeSession()
    session_created, _ = VERBATIM[0]
    feed(rt, session_created, now=10.0)
    assert (rt.session_id, rt.model, rt.expires_at) == (
        "sess_C9G5QPteg4UIbotdKLoYQ",
        "gpt-realtime-2025-08-28",
        1756324625,
    )
    assert rt.last_received_at == 10.0
    rt.configure(SessionConfig(instructions="x"))
    sent(rt)
    feed(rt, session_updated())
    assert rt.configured

    chunks = [b64(160), b64(161), b64(162), b64(800)]
    flow: list[dict[str, object]] = [
        {
            "type": "input_audio_buffer.speech_started",
            "event_id": eid(),
            "audio_start_ms": 100,
            "item_id": "item_U",
        },
        {
            "type": "input_audio_buffer.speech_stopped",
            "event_id": eid(),
            "audio_end_ms": 900,
            "item_id": "item_U",
        },
        {
            "type": "input_audio_buffer.committed",
            "event_id": eid(),
            "item_id": "item_U",
            "previous_item_id": None,
        },
        {
            "type": "conversation.item.added",
            "event_id": eid(),
            "item": {
                "id": "item_U",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        },
        created("resp_A"),
        message_added("resp_A", "item_A"),
        {
            "type": "response.content_part.added",
            "event_id": eid(),
            "response_id": "resp_A",
            "item_id": "item_A",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "audio", "transcript": ""},
        },
        *[delta("resp_A", "item_A", chunk) for chunk in chunks],
        part("response.output_audio_transcript.delta", "resp_A", "item_A", delta="Hello"),
        part("response.output_audio.done", "resp_A", "item_A"),
        part("response.output_audio_transcript.done", "resp_A", "item_A", transcript="Hello"),
        {
            "type": "response.output_item.done",
            "event_id": eid(),
            "response_id": "resp_A",
            "output_index": 0,
            "item": {
                "id": "item_A",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [],
            },
        },
        done(
            "resp_A",
            usage={
                "total_tokens": 30,
                "input_tokens": 10,
                "output_tokens": 20,
                "output_token_details": {"audio_tokens": 18, "text_tokens": 2},
            },
        ),
    ]
    events = [feed(rt, event, now=11.0) for event in flow]
    assert [type(e) for e in events] == [
        SpeechStarted,
        SpeechStopped,
        InputCommitted,
        RealtimeEventIgnored,
        ResponseStarted,
        OutputItemAdded,
        RealtimeEventIgnored,
        AudioDelta,
        AudioDelta,
        AudioDelta,
        AudioDelta,
        TranscriptDelta,
        AudioDone,
        TranscriptDone,
        RealtimeEventIgnored,
        ResponseDone,
    ]
    assert [e.delta for e in events if isinstance(e, AudioDelta)] == chunks
    assert rt.audio_bytes("item_A") == 160 + 161 + 162 + 800
    assert rt.audio_ms("item_A") == (160 + 161 + 162 + 800) // 8
    assert rt.active_response_id is None and not rt.response_requested
    # The item outlives response.done: Twilio may still be playing it.
    assert rt.current_item_id == "item_A"
    assert rt.usage_totals == Usage(30, 10, 20, output_audio_tokens=18, output_text_tokens=2)
    assert rt.data_to_send() == []


def test_response_state_follows_created_item_and_done(session: RealtimeSession) -> None:
    session.create_response()
    feed(session, created("resp_A"))
    assert session.active_response_id == "resp_A" and session.response_requested
    assert session.current_item_id is None
    feed(session, message_added("resp_A", "item_A"))
    assert session.current_item_id == "item_A"
    assert session.audio_bytes("item_A") == 0
    feed(session, done("resp_A"))
    assert session.active_response_id is None and not session.response_requested
    responding(session, "resp_B", "item_B")
    assert session.current_item_id == "item_B"


def test_audio_is_counted_per_item_without_decoding(session: RealtimeSession) -> None:
    responding(session)
    feed(session, delta("resp_A", "item_A", b64(1600)))
    feed(session, delta("resp_A", "item_B", "AAA="))  # an item we never saw added
    feed(session, delta("resp_A", "item_A", b64(7)))
    assert session.audio_bytes("item_A") == 1607
    assert session.audio_ms("item_A") == 200
    assert session.audio_bytes("item_B") == 2
    assert session.audio_bytes("nope") == session.audio_ms("nope") == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("AA==", 1),
        ("AAA=", 2),
        ("AAAA", 3),
        ("=", 0),
        ("==", 0),
        ("Base64EncodedAudioDelta", 17),
    ],
)
def test_decoded_length_table(text: str, expected: int) -> None:
    assert decoded_length(text) == expected


@given(st.binary(max_size=4096))
def test_decoded_length_matches_a_real_decode(data: bytes) -> None:
    assert decoded_length(base64.b64encode(data).decode()) == len(data)


# -- truncate ---------------------------------------------------------------------


def test_truncate_clamps_to_the_audio_received(session: RealtimeSession) -> None:
    responding(session)
    feed(session, delta("resp_A", "item_A", b64(8 * 1500 + 5)))  # 1500.6 ms
    assert session.truncate("item_A", 99_999) == 1500
    assert strip_ids(sent(session)) == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_A",
            "content_index": 0,
            "audio_end_ms": 1500,
        }
    ]
    assert session.current_item_id is None
    assert session.truncate("item_A", -20) == 0
    assert session.truncate("item_A", 640) == 640
    assert [f["audio_end_ms"] for f in sent(session)] == [0, 640]


def test_truncate_of_an_item_without_audio_sends_zero(session: RealtimeSession) -> None:
    responding(session)
    assert session.truncate("item_A", 300) == 0
    assert sent(session)[0]["audio_end_ms"] == 0


def test_truncate_of_an_older_item_keeps_the_current_one(session: RealtimeSession) -> None:
    responding(session, "resp_A", "item_A")
    feed(session, done("resp_A"))
    responding(session, "resp_B", "item_B")
    session.truncate("item_A", 0)
    assert session.current_item_id == "item_B"


def test_truncate_of_an_unknown_item_is_refused(session: RealtimeSession) -> None:
    with pytest.raises(LocalProtocolError, match="unknown assistant item 'item_X'"):
        session.truncate("item_X", 10)
    feed(
        session,
        item_added("resp_1", {"id": "fc_1", "type": "function_call", "name": "f", "arguments": ""}),
    )
    with pytest.raises(LocalProtocolError):
        session.truncate("fc_1", 10)  # function calls carry no audio
    assert sent(session) == []


# -- function calls (protocols.md 3.5, pitfall 9) ------------------------------------


def test_function_call_flow(session: RealtimeSession) -> None:
    feed(session, created("resp_F"))
    event = feed(
        session,
        item_added(
            "resp_F",
            {
                "id": "fc_call_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "lookup_order",
                "arguments": "",
                "status": "in_progress",
            },
        ),
    )
    assert event == OutputItemAdded("resp_F", "fc_call_1", "function_call")
    assert session.current_item_id is None  # a function call is not something that plays
    feed(
        session,
        {
            "type": "response.function_call_arguments.delta",
            "event_id": eid(),
            "response_id": "resp_F",
            "item_id": "fc_call_1",
            "output_index": 0,
            "call_id": "call_1",
            "delta": '{"order_id"',
        },
    )
    requested = feed(session, function_call_done("resp_F", "call_1"))
    assert requested == FunctionCallRequested(
        "resp_F", "fc_call_1", "call_1", "lookup_order", '{"order_id": "42"}'
    )
    assert dict(session.pending_function_calls) == {"call_1": "lookup_order"}
    feed(session, done("resp_F"))
    assert dict(session.pending_function_calls) == {"call_1": "lookup_order"}

    session.send_function_output("call_1", '{"status": "shipped"}')
    session.create_response()
    assert strip_ids(sent(session)) == [
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": '{"status": "shipped"}',
            },
        },
        {"type": "response.create"},
    ]
    assert dict(session.pending_function_calls) == {}
    with pytest.raises(LocalProtocolError, match="no pending function call 'call_1'"):
        session.send_function_output("call_1", "{}")


def test_pending_function_calls_is_read_only(session: RealtimeSession) -> None:
    feed(session, function_call_done("resp_F", "call_1"))
    with pytest.raises(TypeError):
        session.pending_function_calls["call_2"] = "x"  # type: ignore[index]


def test_function_output_must_be_a_string(session: RealtimeSession) -> None:
    feed(session, function_call_done("resp_F", "call_1"))
    with pytest.raises(LocalProtocolError, match="JSON-encode"):
        session.send_function_output("call_1", {"status": "shipped"})  # type: ignore[arg-type]
    assert dict(session.pending_function_calls) == {"call_1": "lookup_order"}
    assert sent(session) == []


def test_unknown_function_call_output_is_refused(session: RealtimeSession) -> None:
    with pytest.raises(LocalProtocolError):
        session.send_function_output("call_404", "{}")


# -- usage and errors -------------------------------------------------------------


def test_usage_totals_sum_every_response_done(session: RealtimeSession) -> None:
    assert session.usage_totals == Usage(0, 0, 0)
    verbatim_done, expected = VERBATIM[12]
    assert isinstance(expected, ResponseDone)
    feed(session, verbatim_done)
    feed(session, done("resp_2"))  # usage null: nothing to add
    feed(session, verbatim_done)
    assert session.usage_totals == Usage(506, 264, 242, 26, 238, 128, 182, 60)


def test_error_events_are_reported_and_leave_state_alone(session: RealtimeSession) -> None:
    responding(session)
    event = feed(session, error_event("response_cancel_not_active", event_id="sb_evt_9"))
    assert event == RealtimeErrorReported(
        "invalid_request_error", "response_cancel_not_active", "no", None, "sb_evt_9"
    )
    assert session.active_response_id == "resp_A"
    assert session.current_item_id == "item_A"
    assert sent(session) == []


def test_history_turns_are_text_items_of_the_user_or_the_assistant() -> None:
    session = RealtimeSession()
    session.add_history("user", "Can I come Tuesday?")
    session.add_history("assistant", "Tuesday at four works.")
    items = [frame["item"] for frame in sent(session)]  # validated by `sent`
    assert items == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Can I come Tuesday?"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Tuesday at four works."}],
        },
    ]
    with pytest.raises(LocalProtocolError, match="system"):
        session.add_history("system", "You are a pirate.")
