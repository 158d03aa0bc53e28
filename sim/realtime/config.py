"""The effective session configuration and how ``session.update`` changes it.

The session object is kept as the plain JSON dict the service shows in
``session.created`` (protocols.md 3.1), because that dict *is* the contract:
``session.updated`` always carries the full effective session (3.2).

Update rules (3.2): only the fields sent change; objects under ``audio``
merge key by key; ``format`` objects are replaced (pcm gets its fixed 24 kHz
rate); a ``turn_detection`` of the same ``type`` merges, of another type
starts from that type's defaults, ``null`` turns VAD off; lists (``tools``)
are replaced; ``model`` cannot change; ``voice`` cannot change once the
session has produced audio (``cannot_update_voice``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from sim.realtime.audio import AudioFormat, format_from_dict
from sim.realtime.vad import VadSettings
from sim.realtime.validation import ClientError

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "MODEL_SNAPSHOTS",
    "SessionConfig",
    "default_session",
    "resolve_model",
]

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI."
    " Talk quickly. You should always call a function if you can."
)
MODEL_SNAPSHOTS = {"gpt-realtime": "gpt-realtime-2025-08-28"}
SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}
# semantic_vad waits longer for a low-eagerness speaker (3.2: max 8/4/2 s);
# the energy VAD stands in with a silence window per eagerness.
EAGERNESS_SILENCE_MS = {"low": 1200, "medium": 600, "auto": 600, "high": 250}


def resolve_model(model: str) -> str:
    return MODEL_SNAPSHOTS.get(model, model)


def default_session(session_id: str, model: str, expires_at: int) -> dict[str, Any]:
    """The session of ``session.created``, as in the service's example (3.1)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": resolve_model(model),
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD_DEFAULTS, silence_duration_ms=200),
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1,
            },
        },
        "include": None,
    }


def _or(value: object, default: float) -> float:
    return default if value is None else float(value)  # type: ignore[arg-type]


def _format(value: dict[str, Any]) -> dict[str, Any]:
    return format_from_dict(value).to_dict()


@dataclass
class SessionConfig:
    """The session dict plus typed views of the parts the emulator acts on."""

    data: dict[str, Any]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    @property
    def input_format(self) -> AudioFormat:
        return format_from_dict(self.data["audio"]["input"]["format"])

    @property
    def output_format(self) -> AudioFormat:
        return format_from_dict(self.data["audio"]["output"]["format"])

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self.data["audio"]["input"]["turn_detection"]
        return value

    @property
    def transcription(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self.data["audio"]["input"]["transcription"]
        return value

    def vad_settings(self) -> VadSettings | None:
        td = self.turn_detection
        if td is None:
            return None
        if td["type"] == "semantic_vad":
            return VadSettings(
                0.5, 300, EAGERNESS_SILENCE_MS.get(td.get("eagerness") or "auto", 600)
            )
        return VadSettings(
            float(_or(td.get("threshold"), 0.5)),
            int(_or(td.get("prefix_padding_ms"), 300)),
            int(_or(td.get("silence_duration_ms"), 500)),
        )

    def update(self, session: dict[str, Any], *, audio_sent: bool) -> ClientError | None:
        """Apply a validated ``session.update``; on error nothing changes."""
        if session.get("type") != "realtime":
            return ClientError(
                "invalid_value",
                "Cannot change the session type of a realtime session.",
                param="session.type",
            )
        new = self.snapshot()
        for key, value in session.items():
            if key == "type":
                continue
            if key == "model":
                if resolve_model(value) != new["model"]:
                    return ClientError(
                        "invalid_value",
                        "Cannot update a session's model.",
                        param="session.model",
                    )
                continue
            if key == "audio":
                self._merge_audio(new["audio"], value or {})
                continue
            new[key] = copy.deepcopy(value)
        old_voice = self.data["audio"]["output"]["voice"]
        if audio_sent and new["audio"]["output"]["voice"] != old_voice:
            return ClientError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                param="session.audio.output.voice",
            )
        self.data = new
        return None

    @staticmethod
    def _merge_audio(audio: dict[str, Any], update: dict[str, Any]) -> None:
        for side in ("input", "output"):
            for key, value in (update.get(side) or {}).items():
                target = audio[side]
                if key == "format" and value is not None:
                    target[key] = _format(value)
                elif key == "turn_detection" and value is not None:
                    current = target.get(key)
                    kind = value.get("type", current["type"] if current else "server_vad")
                    if current is None or current["type"] != kind:
                        base = (
                            SEMANTIC_VAD_DEFAULTS if kind == "semantic_vad" else SERVER_VAD_DEFAULTS
                        )
                        current = dict(base)
                    target[key] = {**current, **value, "type": kind}
                else:
                    target[key] = copy.deepcopy(value)
