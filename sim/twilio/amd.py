"""Answering machine detection, decided by the scenario instead of by listening (protocols.md 2.6).

``amd_result`` says what AMD would report and after how long: a human is
recognised once their short greeting is followed by ``speech_end_threshold``
of silence; ``Enable`` reports a machine as ``machine_start`` once speech
outlasts ``speech_threshold``; ``DetectMessageEnd`` waits for the end of the
machine's greeting (and beep) and never reports ``machine_start``: a machine
scripted as ``machine_start`` (no word on how its greeting ends) is reported as
``machine_end_other``; ``unknown`` takes the whole
``MachineDetectionTimeout``. Detection slower than the timeout reports ``unknown`` at the timeout.
``machine_audio`` is what the voicemail plays
from the moment it answers: a greeting, then (for ``machine_end_beep``) a beep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.scenario import CLIPS_DIR

from .caller import SILENCE_BYTE, beep

__all__ = ["AmdResult", "amd_result", "machine_audio"]

GREETING_CLIP = CLIPS_DIR / "caller_hello.ulaw"  # stands in for "leave a message after the tone"
HUMAN_GREETING_MS = 1000


@dataclass(frozen=True, slots=True)
class AmdResult:
    answered_by: str
    duration_ms: int


def _int(params: dict[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError:
        return default


def machine_audio(answered_by: str, greeting: bytes) -> bytes:
    audio = greeting + SILENCE_BYTE * 2400  # 300 ms
    if answered_by == "machine_end_beep":
        audio += beep(1000.0, 500)
    return audio


def load_greeting(path: Path = GREETING_CLIP) -> bytes:
    return path.read_bytes()


def amd_result(
    mode: str, outcome: str, answered_by: str, params: dict[str, str], machine_audio_ms: int
) -> AmdResult:
    timeout_ms = _int(params, "MachineDetectionTimeout", 30) * 1000
    speech_ms = _int(params, "MachineDetectionSpeechThreshold", 2400)
    end_ms = _int(params, "MachineDetectionSpeechEndThreshold", 1200)
    if outcome != "voicemail":
        answered_by = "human" if answered_by.startswith("machine") else answered_by
    match answered_by:
        case "human":
            result = AmdResult("human", HUMAN_GREETING_MS + end_ms)
        case "unknown":
            result = AmdResult("unknown", timeout_ms)
        case "fax":
            result = AmdResult("fax", 3000)
        case _ if mode == "Enable":
            result = AmdResult("machine_start", speech_ms + 200)
        case "machine_start":  # DetectMessageEnd's values are machine_end_* only
            result = AmdResult("machine_end_other", machine_audio_ms)
        case _:
            result = AmdResult(answered_by, machine_audio_ms)
    # Undecided when MachineDetectionTimeout runs out.
    return result if result.duration_ms <= timeout_ms else AmdResult("unknown", timeout_ms)
