"""SessionConfig: validation on construction and the GA ``session`` payload (protocols.md 3.2)."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import orjson
import pydantic
import pytest
from openai._models import BaseModel
from openai.types.realtime import RealtimeClientEvent

from switchboard.errors import ConfigError
from switchboard.session_config import (
    VOICES,
    SemanticVad,
    ServerVad,
    SessionConfig,
    ToolSpec,
)

CLIENT = pydantic.TypeAdapter(RealtimeClientEvent)
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}
LOOKUP = ToolSpec("lookup_order", "Look an order up.", ORDER_SCHEMA)
# Beta field names (protocols.md 3.8) that must never appear in a GA session.
BETA_FIELDS = {
    "modalities",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "max_response_output_tokens",
    "temperature",
}


def assert_no_extras(model: BaseModel, path: str = "") -> None:
    """The SDK models allow unknown fields; a strict check must diff them (protocols.md 4.5)."""
    assert not model.model_extra, f"unknown fields at {path or '<root>'}: {model.model_extra}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, BaseModel):
                assert_no_extras(child, f"{path}.{name}")


def validate_update(session: dict[str, object]) -> None:
    """Round-trip through JSON and validate as a GA ``session.update``, strictly."""
    wire = orjson.loads(orjson.dumps({"type": "session.update", "session": session}))
    model = CLIENT.validate_python(wire)
    assert model.type == "session.update"
    assert_no_extras(model)


def all_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in all_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in all_keys(v)}
    return set()


def test_default_payload_is_the_minimal_pcmu_bridge_session() -> None:
    payload = SessionConfig(instructions="Be brief.").to_session_payload()
    assert payload == {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    }
    validate_update(payload)
    assert not all_keys(payload) & BETA_FIELDS


CONFIGS = {
    "semantic_vad": SessionConfig(
        instructions="x", turn_detection=SemanticVad(eagerness="low", interrupt_response=False)
    ),
    "manual_turns": SessionConfig(instructions="", turn_detection=None, transcription_model=None),
    "tuned_server_vad": SessionConfig(
        instructions="x",
        voice="cedar",
        turn_detection=ServerVad(
            threshold=1, prefix_padding_ms=0, silence_duration_ms=200, idle_timeout_ms=6000
        ),
        transcription_language="en",
        noise_reduction="far_field",
        max_output_tokens=4096,
    ),
    "forced_tool": SessionConfig(
        instructions="x",
        model="gpt-realtime-mini",
        tools=(LOOKUP, ToolSpec("hang_up", "", {"type": "object", "properties": {}})),
        tool_choice="lookup_order",
        max_output_tokens=1,
    ),
    "required_tool": SessionConfig(instructions="x", tools=(LOOKUP,), tool_choice="required"),
}


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_variant_is_a_valid_strict_ga_session_update(config: SessionConfig) -> None:
    payload = config.to_session_payload()
    validate_update(payload)
    assert not all_keys(payload) & BETA_FIELDS
    audio = payload["audio"]
    assert isinstance(audio, dict)
    assert audio["input"]["format"] == audio["output"]["format"] == {"type": "audio/pcmu"}
    assert audio["output"]["voice"] == config.voice
    assert payload["output_modalities"] == ["audio"]


def test_variant_fields_land_in_their_ga_locations() -> None:
    semantic = CONFIGS["semantic_vad"].to_session_payload()["audio"]
    assert semantic["input"]["turn_detection"] == {  # type: ignore[index]
        "type": "semantic_vad",
        "eagerness": "low",
        "create_response": True,
        "interrupt_response": False,
    }
    manual = CONFIGS["manual_turns"].to_session_payload()["audio"]
    assert manual["input"]["turn_detection"] is None  # type: ignore[index]
    assert manual["input"]["transcription"] is None  # type: ignore[index]
    tuned = CONFIGS["tuned_server_vad"].to_session_payload()
    tuned_input = tuned["audio"]["input"]  # type: ignore[index]
    assert tuned_input["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "en"}
    assert tuned_input["noise_reduction"] == {"type": "far_field"}
    assert tuned_input["turn_detection"]["idle_timeout_ms"] == 6000
    assert tuned["max_output_tokens"] == 4096
    forced = CONFIGS["forced_tool"].to_session_payload()
    assert forced["tool_choice"] == {"type": "function", "name": "lookup_order"}
    assert forced["model"] == "gpt-realtime-mini"
    assert forced["tools"][0] == {  # type: ignore[index]
        "type": "function",
        "name": "lookup_order",
        "description": "Look an order up.",
        "parameters": ORDER_SCHEMA,
    }
    assert CONFIGS["required_tool"].to_session_payload()["tool_choice"] == "required"


def test_tool_parameters_are_deep_copied_to_plain_json() -> None:
    ids: dict[str, object] = {"type": "array", "enum": (1, 2.5, None)}
    nested = {"type": "object", "properties": {"ids": ids}}
    tool = ToolSpec("t", "d", MappingProxyType(nested))
    payload: Any = tool.to_payload()
    assert payload["parameters"] == {
        "type": "object",
        "properties": {"ids": {"type": "array", "enum": [1, 2.5, None]}},
    }
    payload["parameters"]["properties"]["ids"]["type"] = "string"
    assert ids["type"] == "array"
    orjson.dumps(payload)  # plain dicts and lists only


def test_unknown_voice_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        SessionConfig(instructions="x", voice="nova")
    message = str(caught.value)
    assert "'nova'" in message
    for voice in VOICES:
        assert voice in message


@pytest.mark.parametrize("voice", VOICES)
def test_every_literal_voice_is_accepted(voice: str) -> None:
    validate_update(SessionConfig(instructions="x", voice=voice).to_session_payload())


BAD_SESSIONS: dict[str, tuple[dict[str, object], str]] = {
    "instructions_not_str": ({"instructions": None}, "instructions"),
    "empty_model": ({"model": ""}, "model"),
    "turn_detection_dict": ({"turn_detection": {"type": "server_vad"}}, "turn_detection"),
    "empty_transcription_model": ({"transcription_model": ""}, "transcription_model"),
    "language_without_model": (
        {"transcription_model": None, "transcription_language": "en"},
        "needs a transcription_model",
    ),
    "empty_language": ({"transcription_language": ""}, "transcription_language"),
    "noise_reduction": ({"noise_reduction": "loud"}, "noise_reduction"),
    "tools_list": ({"tools": [LOOKUP]}, "tuple of ToolSpec"),
    "tools_dicts": ({"tools": ({"name": "x"},)}, "tuple of ToolSpec"),
    "duplicate_tools": ({"tools": (LOOKUP, LOOKUP)}, "duplicate tool names: lookup_order"),
    "required_without_tools": ({"tool_choice": "required"}, "'required' needs"),
    "unknown_tool_choice": ({"tool_choice": "lookup"}, "no tools declared"),
    "unknown_tool_name": ({"tools": (LOOKUP,), "tool_choice": "lookup"}, "(lookup_order)"),
    "tokens_zero": ({"max_output_tokens": 0}, "max_output_tokens"),
    "tokens_too_many": ({"max_output_tokens": 4097}, "max_output_tokens"),
    "tokens_bool": ({"max_output_tokens": True}, "max_output_tokens"),
    "tokens_word": ({"max_output_tokens": "infinite"}, "max_output_tokens"),
}


@pytest.mark.parametrize(("kwargs", "needle"), BAD_SESSIONS.values(), ids=BAD_SESSIONS.keys())
def test_bad_session_values_raise_config_error(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SessionConfig(**{"instructions": "x", **kwargs})  # type: ignore[arg-type]
    assert needle in str(caught.value)


BAD_VADS: dict[str, tuple[dict[str, object], str]] = {
    "threshold_negative": ({"threshold": -0.1}, "threshold"),
    "threshold_above_one": ({"threshold": 1.1}, "threshold"),
    "threshold_nan": ({"threshold": math.nan}, "threshold"),
    "threshold_bool": ({"threshold": True}, "threshold"),
    "threshold_str": ({"threshold": "0.5"}, "threshold"),
    "prefix_negative": ({"prefix_padding_ms": -1}, "prefix_padding_ms must be an int >= 0"),
    "prefix_float": ({"prefix_padding_ms": 300.0}, "prefix_padding_ms"),
    "silence_zero": ({"silence_duration_ms": 0}, "silence_duration_ms must be an int >= 1"),
    "idle_zero": ({"idle_timeout_ms": 0}, "idle_timeout_ms"),
    "idle_bool": ({"idle_timeout_ms": True}, "idle_timeout_ms"),
    "create_response_str": ({"create_response": "yes"}, "ServerVad.create_response"),
    "interrupt_response_int": ({"interrupt_response": 1}, "ServerVad.interrupt_response"),
}


@pytest.mark.parametrize(("kwargs", "needle"), BAD_VADS.values(), ids=BAD_VADS.keys())
def test_bad_server_vad_values_raise_config_error(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ServerVad(**kwargs)  # type: ignore[arg-type]
    assert needle in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"eagerness": "fast"}, "eagerness must be one of low, medium, high, auto"),
        ({"create_response": None}, "SemanticVad.create_response"),
        ({"interrupt_response": 0}, "SemanticVad.interrupt_response"),
    ],
)
def test_bad_semantic_vad_values_raise_config_error(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SemanticVad(**kwargs)  # type: ignore[arg-type]
    assert needle in str(caught.value)


BAD_TOOLS: dict[str, tuple[tuple[object, object, object], str]] = {
    "empty_name": (("", "d", ORDER_SCHEMA), "tool name must not be empty"),
    "name_not_str": ((None, "d", ORDER_SCHEMA), "tool name must not be empty"),
    "name_with_space": (("look up", "d", ORDER_SCHEMA), "letters, digits"),
    "name_too_long": (("x" * 65, "d", ORDER_SCHEMA), "1-64"),
    "description_not_str": (("t", None, ORDER_SCHEMA), "description must be a string"),
    "parameters_list": (("t", "d", ["type", "object"]), "JSON schema object"),
    "parameters_not_object_schema": (("t", "d", {"type": "string"}), '"type": "object"'),
    "parameters_set": (("t", "d", {"type": "object", "enum": {1, 2}}), "set, which is not JSON"),
    "parameters_nan": (("t", "d", {"type": "object", "max": math.inf}), "non-finite"),
    "parameters_int_key": (("t", "d", {"type": "object", "p": {1: "x"}}), "non-string key 1"),
}


@pytest.mark.parametrize(("args", "needle"), BAD_TOOLS.values(), ids=BAD_TOOLS.keys())
def test_bad_tool_specs_raise_config_error(
    args: tuple[object, object, object], needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ToolSpec(*args)  # type: ignore[arg-type]
    assert needle in str(caught.value)


def test_sixty_four_character_tool_name_is_accepted() -> None:
    assert ToolSpec("x" * 64, "", {"type": "object"}).to_payload()["name"] == "x" * 64


@pytest.mark.parametrize("threshold", [0, 0.0, 1.0])
def test_vad_threshold_bounds_are_inclusive(threshold: float) -> None:
    assert ServerVad(threshold=threshold).to_payload()["threshold"] == threshold
