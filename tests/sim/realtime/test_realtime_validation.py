"""Frame validation against the SDK's GA models, with the service's error wording."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent

from sim.realtime.validation import (
    CLIENT_EVENT_TYPES,
    ClientError,
    ParsedEvent,
    ServerValidator,
    parse_client_event,
)

CLIENT_UNION = pydantic.TypeAdapter(RealtimeClientEvent)

VALID: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"type": "realtime", "instructions": "hi"}},
    {"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "response.create", "response": {"output_modalities": ["text"]}},
    {"type": "response.cancel", "response_id": "resp_1"},
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
    },
    {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 5},
    {"type": "conversation.item.delete", "item_id": "i"},
    {"type": "conversation.item.retrieve", "item_id": "i"},
    {"type": "output_audio_buffer.clear"},
]

INVALID: list[tuple[dict[str, Any], str, str | None]] = [
    (
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}},
            },
        },
        "invalid_value",
        "session.audio.input.format.rate",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_txt", "text": "x"}],
            },
        },
        "invalid_value",
        "item.content[0].type",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c"},
        },
        "missing_required_parameter",
        "item.output",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "c", "output": {"a": 1}},
        },
        "invalid_type",
        "item.output",
    ),
    (
        {
            "type": "conversation.item.truncate",
            "item_id": "i",
            "content_index": 0,
            "audio_end_ms": "5",
        },
        "invalid_type",
        "audio_end_ms",
    ),
    (
        {"type": "session.update", "session": {"instructions": "x"}},
        "missing_required_parameter",
        "session.type",
    ),
]


@pytest.mark.parametrize("event", VALID, ids=lambda e: e["type"])
def test_valid_events_parse_and_agree_with_the_full_union(event: dict[str, Any]) -> None:
    parsed = parse_client_event(json.dumps(event))
    assert isinstance(parsed, ParsedEvent)
    assert parsed.type == event["type"]
    assert parsed.data == event
    CLIENT_UNION.validate_python(event, strict=True)


@pytest.mark.parametrize(("event", "code", "param"), INVALID)
def test_invalid_events_are_named_like_the_service_does(
    event: dict[str, Any], code: str, param: str | None
) -> None:
    error = parse_client_event(json.dumps(event))
    assert isinstance(error, ClientError)
    assert (error.code, error.param) == (code, param)
    assert error.close is None
    with pytest.raises(pydantic.ValidationError):
        CLIENT_UNION.validate_python(event, strict=True)  # the union agrees it is invalid


def test_unknown_keys_are_caught_although_the_models_allow_them() -> None:
    event = {
        "type": "session.update",
        "session": {"type": "realtime", "audio": {"input": {"foo": 1}}},
    }
    CLIENT_UNION.validate_python(event)  # extra="allow": the SDK alone would let it pass
    error = parse_client_event(json.dumps(event))
    assert isinstance(error, ClientError)
    assert error.code == "unknown_parameter"
    assert error.message == "Unknown parameter: 'session.audio.input.foo'."


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "session.update",
            "session": {"modalities": ["audio"], "input_audio_format": "g711_ulaw"},
        },
        {"type": "session.update", "session": {"type": "realtime", "voice": "alloy"}},
        {"type": "response.create", "response": {"modalities": ["text"]}},
        {"type": "transcription_session.update", "session": {}},
    ],
)
def test_beta_shapes_close_the_session(event: dict[str, Any]) -> None:
    error = parse_client_event(json.dumps(event))
    assert isinstance(error, ClientError)
    assert error.code == "beta_api_shape_disabled"
    assert error.close == (4000, "invalid_request_error.beta_api_shape_disabled")


def test_the_supported_types_are_the_eleven_ga_client_events() -> None:
    assert len(CLIENT_EVENT_TYPES) == 11
    assert "response.audio.delta" not in CLIENT_EVENT_TYPES


def test_server_validator_flags_shape_errors_and_undeclared_keys() -> None:
    check = ServerValidator().check
    ok = {"type": "input_audio_buffer.cleared", "event_id": "event_1"}
    assert check(ok) == []
    assert check({"type": "response.audio.delta", "event_id": "e"})  # beta name
    assert check({"type": "input_audio_buffer.committed", "event_id": "e"})  # no item_id
    assert check({**ok, "colour": "red"}) == ["input_audio_buffer.cleared: undeclared key colour"]
    session = {"type": "realtime", "id": "sess_1", "object": "realtime.session", "expires_at": 1}
    assert check({"type": "session.created", "event_id": "e", "session": session}) == []
