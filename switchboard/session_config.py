"""Typed Realtime session configuration and its GA ``session.update`` payload.

protocols.md 3.2. A ``SessionConfig`` is validated when it is built, so a
typo in a voice or a VAD value fails at start-up with a ``ConfigError`` rather
than as a server ``error`` in the middle of a call. ``to_session_payload()``
returns the GA ``session`` object; ``RealtimeSession.configure`` wraps it in a
``session.update`` event.

The audio format is not configurable: a Twilio bridge passes base64 mu-law
straight through, so both directions are always ``audio/pcmu`` (8 kHz, no
``rate`` field) and the output modality is always audio.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeGuard

from switchboard.errors import ConfigError

__all__ = [
    "MAX_OUTPUT_TOKENS_LIMIT",
    "VOICES",
    "SemanticVad",
    "ServerVad",
    "SessionConfig",
    "ToolSpec",
]

# The SDK's literal voice list (protocols.md 3.2). ``{"id": ...}`` custom
# voices exist but are deliberately not supported here.
VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
EAGERNESS: tuple[str, ...] = ("low", "medium", "high", "auto")
NOISE_REDUCTIONS: tuple[str, ...] = ("near_field", "far_field")
TOOL_CHOICE_MODES: tuple[str, ...] = ("auto", "none", "required")
MAX_OUTPUT_TOKENS_LIMIT = 4096
# OpenAI's function-name rule: letters, digits, underscores and dashes, at most 64.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PCMU: dict[str, object] = {"type": "audio/pcmu"}


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass; a VAD value of True is a bug, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bool(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be a bool, got {value!r}")


def _check_ms(name: str, value: object, *, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"ServerVad.{name} must be an int >= {minimum}, got {value!r}")


def _json_value(value: object, where: str) -> object:
    """Deep-copy a JSON-compatible value into plain dicts and lists."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} holds a non-finite number {value!r}")
        return value
    if isinstance(value, Mapping):
        copied: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where} has a non-string key {key!r}")
            copied[key] = _json_value(item, f"{where}.{key}")
        return copied
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ConfigError(f"{where} holds {type(value).__name__}, which is not JSON")


@dataclass(frozen=True)
class ServerVad:
    """``server_vad`` turn detection: energy-based, tunable by threshold and timings."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True

    def __post_init__(self) -> None:
        threshold = self.threshold
        if not (isinstance(threshold, int | float) and not isinstance(threshold, bool)) or not (
            0.0 <= threshold <= 1.0
        ):
            raise ConfigError(f"ServerVad.threshold must be between 0.0 and 1.0, got {threshold!r}")
        _check_ms("prefix_padding_ms", self.prefix_padding_ms, minimum=0)
        _check_ms("silence_duration_ms", self.silence_duration_ms, minimum=1)
        if self.idle_timeout_ms is not None:
            _check_ms("idle_timeout_ms", self.idle_timeout_ms, minimum=1)
        _check_bool("ServerVad", "create_response", self.create_response)
        _check_bool("ServerVad", "interrupt_response", self.interrupt_response)

    def to_payload(self) -> dict[str, object]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "idle_timeout_ms": self.idle_timeout_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True)
class SemanticVad:
    """``semantic_vad`` turn detection: a model decides when the caller has finished."""

    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True

    def __post_init__(self) -> None:
        if self.eagerness not in EAGERNESS:
            raise ConfigError(
                f"SemanticVad.eagerness must be one of {', '.join(EAGERNESS)}; "
                f"got {self.eagerness!r}"
            )
        _check_bool("SemanticVad", "create_response", self.create_response)
        _check_bool("SemanticVad", "interrupt_response", self.interrupt_response)

    def to_payload(self) -> dict[str, object]:
        return {
            "type": "semantic_vad",
            "eagerness": self.eagerness,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


@dataclass(frozen=True)
class ToolSpec:
    """A function tool the model may call; ``parameters`` is a JSON schema object."""

    name: str
    description: str
    parameters: Mapping[str, object]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("tool name must not be empty")
        if not _TOOL_NAME.fullmatch(self.name):
            raise ConfigError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-'")
        if not isinstance(self.description, str):
            raise ConfigError(f"tool {self.name!r}: description must be a string")
        if not isinstance(self.parameters, Mapping):
            raise ConfigError(f"tool {self.name!r}: parameters must be a JSON schema object")
        if self.parameters.get("type") != "object":
            raise ConfigError(f'tool {self.name!r}: parameters must have "type": "object"')
        _json_value(self.parameters, f"tool {self.name!r} parameters")

    def to_payload(self) -> dict[str, object]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": _json_value(self.parameters, self.name),
        }


@dataclass(frozen=True)
class SessionConfig:
    """Everything the bridge sets in ``session.update``; validated on construction.

    ``tool_choice`` is ``auto``, ``none``, ``required`` or the name of one of
    ``tools`` (which forces that function).
    """

    instructions: str
    voice: str = "marin"
    model: str = "gpt-realtime"
    turn_detection: ServerVad | SemanticVad | None = ServerVad()
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    transcription_language: str | None = None
    noise_reduction: Literal["near_field", "far_field"] | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    max_output_tokens: int | Literal["inf"] = "inf"

    def __post_init__(self) -> None:
        if not isinstance(self.instructions, str):
            raise ConfigError("instructions must be a string")
        if self.voice not in VOICES:
            raise ConfigError(f"unknown voice {self.voice!r}; valid voices: {', '.join(VOICES)}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError("model must be a non-empty string")
        if not isinstance(self.turn_detection, ServerVad | SemanticVad | None):
            raise ConfigError(
                f"turn_detection must be ServerVad, SemanticVad or None, "
                f"got {type(self.turn_detection).__name__}"
            )
        self._check_transcription()
        if self.noise_reduction is not None and self.noise_reduction not in NOISE_REDUCTIONS:
            raise ConfigError(
                f"noise_reduction must be None or one of {', '.join(NOISE_REDUCTIONS)}; "
                f"got {self.noise_reduction!r}"
            )
        self._check_tools()
        tokens = self.max_output_tokens
        if tokens != "inf" and not (_is_int(tokens) and 1 <= tokens <= MAX_OUTPUT_TOKENS_LIMIT):
            raise ConfigError(
                f"max_output_tokens must be 'inf' or an int in 1..{MAX_OUTPUT_TOKENS_LIMIT}, "
                f"got {tokens!r}"
            )

    def _check_transcription(self) -> None:
        model, language = self.transcription_model, self.transcription_language
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigError("transcription_model must be None or a non-empty string")
        if language is not None:
            if model is None:
                raise ConfigError("transcription_language needs a transcription_model")
            if not isinstance(language, str) or not language:
                raise ConfigError("transcription_language must be None or a non-empty string")

    def _check_tools(self) -> None:
        if not isinstance(self.tools, tuple) or not all(
            isinstance(tool, ToolSpec) for tool in self.tools
        ):
            raise ConfigError("tools must be a tuple of ToolSpec")
        names = [tool.name for tool in self.tools]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"duplicate tool names: {', '.join(duplicates)}")
        choice = self.tool_choice
        if choice == "required" and not names:
            raise ConfigError("tool_choice 'required' needs at least one tool")
        if choice not in TOOL_CHOICE_MODES and choice not in names:
            raise ConfigError(
                f"tool_choice must be one of {', '.join(TOOL_CHOICE_MODES)} or a tool name "
                f"({', '.join(names) or 'no tools declared'}); got {choice!r}"
            )

    def to_session_payload(self) -> dict[str, object]:
        """The GA ``session`` object for ``session.update`` (never beta fields)."""
        transcription: dict[str, object] | None = None
        if self.transcription_model is not None:
            transcription = {"model": self.transcription_model}
            if self.transcription_language is not None:
                transcription["language"] = self.transcription_language
        noise = None if self.noise_reduction is None else {"type": self.noise_reduction}
        turn = None if self.turn_detection is None else self.turn_detection.to_payload()
        choice: object = self.tool_choice
        if choice not in TOOL_CHOICE_MODES:
            choice = {"type": "function", "name": self.tool_choice}
        return {
            "type": "realtime",
            "model": self.model,
            "instructions": self.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": dict(_PCMU),
                    "transcription": transcription,
                    "noise_reduction": noise,
                    "turn_detection": turn,
                },
                "output": {"format": dict(_PCMU), "voice": self.voice},
            },
            "tools": [tool.to_payload() for tool in self.tools],
            "tool_choice": choice,
            "max_output_tokens": self.max_output_tokens,
        }
