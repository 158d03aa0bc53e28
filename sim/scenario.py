"""The scenario format both emulators read (YAML or JSON).

A scenario is a conversation script plus how each destination number
behaves. The Twilio emulator uses ``numbers`` and the caller's turns; the
Realtime emulator uses the assistant's turns and the caller's transcripts
(the n-th caller turn it hears gets the n-th ``say`` transcript).

.. code-block:: yaml

    name: dental-booking
    numbers:                      # destination -> behaviour; "default" for all others
      default: {outcome: human, answer_after_s: 1.0}
      "+15550000002": {outcome: busy}
      "+15550000005": {outcome: voicemail, answered_by: machine_end_beep}
    caller:                       # the simulated phone's turns, in order
      - say: "Hi, who is this?"   # transcript the Realtime emulator reports
        clip: hello.ulaw          # 8 kHz mu-law; sim/clips/ or next to the file
        after_agent_ms: 300       # start 300 ms after the agent stopped playing
      - say: "Sorry, one moment"
        clip: sorry.ulaw
        barge_in_ms: 800          # start 800 ms into the agent's next reply
      - dtmf: "1"
      - hangup: true
    assistant:                    # one entry per response the model gives, in order
      - say: "Hello! This is Ava from Bright Smiles."
        clip: greeting.ulaw       # optional; default: the emulator's own speech
      - tool_call: {name: check_availability, arguments: {day: monday}}
      - say: "Monday at four works."

A caller turn starts ``at_ms`` after the stream started, or ``barge_in_ms``
after the agent's current reply began playing, or (the default)
``after_agent_ms`` after the agent's audio stopped playing (400 ms if none of
the three is given).

``answered_by`` (for ``outcome: voicemail``; default ``machine_end_beep``)
is what answering machine detection finds, reported as Twilio does for the
call's ``MachineDetection`` (protocols.md 2.6): with ``Enable`` any machine
is ``machine_start``; ``DetectMessageEnd`` never reports ``machine_start``,
so a machine scripted as ``machine_start`` (how its greeting ends left
unsaid) is reported there as ``machine_end_other``. With any other
outcome, a machine value is reported as ``human``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import phonenumbers
import yaml

from switchboard.errors import ScenarioError

__all__ = [
    "AssistantTurn",
    "CallerTurn",
    "NumberBehaviour",
    "Scenario",
    "load_scenario",
    "parse_scenario",
]

Outcome = Literal["human", "busy", "no-answer", "failed", "voicemail"]
OUTCOMES: tuple[str, ...] = ("human", "busy", "no-answer", "failed", "voicemail")
ANSWERED_BY: tuple[str, ...] = (
    "human",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "fax",
    "unknown",
)
CLIPS_DIR = Path(__file__).parent / "clips"
DEFAULT_AFTER_AGENT_MS = 400


@dataclass(frozen=True, slots=True)
class NumberBehaviour:
    outcome: Outcome = "human"
    answer_after_s: float = 1.0
    hangup_after_s: float | None = None
    answered_by: str = "human"


@dataclass(frozen=True, slots=True)
class CallerTurn:
    say: str | None = None
    clip: Path | None = None
    dtmf: str | None = None
    hangup: bool = False
    at_ms: int | None = None
    barge_in_ms: int | None = None
    after_agent_ms: int = DEFAULT_AFTER_AGENT_MS


@dataclass(frozen=True, slots=True)
class AssistantTurn:
    say: str | None = None
    clip: Path | None = None
    tool_name: str | None = None
    tool_arguments: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str = "default"
    numbers: Mapping[str, NumberBehaviour] = field(default_factory=dict)
    default_number: NumberBehaviour = NumberBehaviour()
    caller: tuple[CallerTurn, ...] = ()
    assistant: tuple[AssistantTurn, ...] = ()
    max_call_s: float = 300.0

    def behaviour_for(self, number: str) -> NumberBehaviour:
        return self.numbers.get(number, self.default_number)


def load_scenario(path: str | Path) -> Scenario:
    """Read a ``.yaml``/``.yml``/``.json`` scenario; errors name the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"scenario {path} is not UTF-8 text: {exc.reason}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ScenarioError(f"scenario {path} is not valid {path.suffix[1:]}: {exc}") from exc
    return parse_scenario(data, base_dir=path.parent)


def parse_scenario(data: object, base_dir: Path | None = None) -> Scenario:
    root = _mapping(data, "scenario")
    _no_unknown(root, "scenario", {"name", "numbers", "caller", "assistant", "max_call_s"})
    numbers_raw = _mapping(root.get("numbers", {}), "numbers")
    numbers = {
        _phone_key(k): _number(v, f"numbers[{k!r}]")
        for k, v in numbers_raw.items()
        if k != "default"
    }
    default = (
        _number(numbers_raw["default"], "numbers['default']")
        if "default" in numbers_raw
        else NumberBehaviour()
    )
    caller = tuple(
        _caller_turn(t, f"caller[{i}]", base_dir)
        for i, t in enumerate(_list(root.get("caller", []), "caller"))
    )
    assistant = tuple(
        _assistant_turn(t, f"assistant[{i}]", base_dir)
        for i, t in enumerate(_list(root.get("assistant", []), "assistant"))
    )
    return Scenario(
        name=_str(root.get("name", "default"), "name"),
        numbers=numbers,
        default_number=default,
        caller=caller,
        assistant=assistant,
        max_call_s=_number_value(root.get("max_call_s", 300.0), "max_call_s", positive=True),
    )


def _number(data: object, where: str) -> NumberBehaviour:
    raw = _mapping(data, where)
    _no_unknown(raw, where, {"outcome", "answer_after_s", "hangup_after_s", "answered_by"})
    outcome = raw.get("outcome", "human")
    if outcome not in OUTCOMES:
        raise ScenarioError(f"{where}.outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    default_answered_by = "machine_end_beep" if outcome == "voicemail" else "human"
    answered_by = raw.get("answered_by", default_answered_by)
    if answered_by not in ANSWERED_BY:
        raise ScenarioError(
            f"{where}.answered_by {answered_by!r} is not one of {', '.join(ANSWERED_BY)}"
        )
    hangup = raw.get("hangup_after_s")
    return NumberBehaviour(
        outcome=cast(Outcome, outcome),
        answer_after_s=_number_value(raw.get("answer_after_s", 1.0), f"{where}.answer_after_s"),
        hangup_after_s=None
        if hangup is None
        else _number_value(hangup, f"{where}.hangup_after_s", positive=True),
        answered_by=answered_by,
    )


def _caller_turn(data: object, where: str, base_dir: Path | None) -> CallerTurn:
    raw = _mapping(data, where)
    _no_unknown(
        raw, where, {"say", "clip", "dtmf", "hangup", "at_ms", "barge_in_ms", "after_agent_ms"}
    )
    kinds = [k for k in ("clip", "dtmf", "hangup") if raw.get(k)]
    if len(kinds) != 1:
        raise ScenarioError(f"{where} needs exactly one of clip, dtmf or hangup, got {kinds}")
    timings = [k for k in ("at_ms", "barge_in_ms", "after_agent_ms") if k in raw]
    if len(timings) > 1:
        raise ScenarioError(f"{where} has more than one timing: {', '.join(timings)}")
    dtmf = raw.get("dtmf")
    if dtmf is not None and (
        not isinstance(dtmf, str) or not dtmf or any(d not in "0123456789*#ABCDw" for d in dtmf)
    ):
        raise ScenarioError(f"{where}.dtmf {dtmf!r} must be digits from 0-9 * # A-D (w = pause)")
    return CallerTurn(
        say=_optional_str(raw.get("say"), f"{where}.say"),
        clip=_clip(raw.get("clip"), f"{where}.clip", base_dir),
        dtmf=dtmf,
        hangup=_bool(raw.get("hangup", False), f"{where}.hangup"),
        at_ms=_optional_ms(raw.get("at_ms"), f"{where}.at_ms"),
        barge_in_ms=_optional_ms(raw.get("barge_in_ms"), f"{where}.barge_in_ms"),
        after_agent_ms=_optional_ms(
            raw.get("after_agent_ms", DEFAULT_AFTER_AGENT_MS), f"{where}.after_agent_ms"
        )
        or 0,
    )


def _assistant_turn(data: object, where: str, base_dir: Path | None) -> AssistantTurn:
    raw = _mapping(data, where)
    _no_unknown(raw, where, {"say", "clip", "tool_call"})
    tool = raw.get("tool_call")
    if (tool is None) == (raw.get("say") is None):
        raise ScenarioError(f"{where} needs exactly one of say or tool_call")
    if tool is not None:
        tool_map = _mapping(tool, f"{where}.tool_call")
        _no_unknown(tool_map, f"{where}.tool_call", {"name", "arguments"})
        return AssistantTurn(
            tool_name=_str(tool_map.get("name"), f"{where}.tool_call.name"),
            tool_arguments=dict(
                _mapping(tool_map.get("arguments", {}), f"{where}.tool_call.arguments")
            ),
        )
    return AssistantTurn(
        say=_str(raw.get("say"), f"{where}.say"),
        clip=_clip(raw.get("clip"), f"{where}.clip", base_dir),
    )


def _clip(value: object, where: str, base_dir: Path | None) -> Path | None:
    if value is None:
        return None
    name = _str(value, where)
    for folder in (base_dir, CLIPS_DIR):
        if folder is not None and (folder / name).is_file():
            return folder / name
    raise ScenarioError(f"{where}: clip {name!r} not found next to the scenario or in {CLIPS_DIR}")


def _phone_key(key: object) -> str:
    """A ``numbers`` key as the emulator matches dialed numbers: E.164, exactly."""
    if not isinstance(key, str):  # YAML reads +15550000002 unquoted as an integer
        raise ScenarioError(f"numbers key {key!r} must be a quoted string, like '+15550000002'")
    try:
        parsed = phonenumbers.parse(key, None)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        raise ScenarioError(f"numbers key {key!r} is not a phone number in E.164 form")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164 != key:
        raise ScenarioError(f"numbers key {key!r} must be written in E.164 form: {e164!r}")
    return key


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{where} must be true or false, got {value!r}")
    return value


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise ScenarioError(f"{where} must be a list, got {type(value).__name__}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ScenarioError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _optional_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _number_value(value: object, where: str, *, positive: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ScenarioError(f"{where} must be a finite number >= 0, got {value!r}")
    if positive and value == 0:
        raise ScenarioError(f"{where} must be greater than 0")
    return float(value)


def _optional_ms(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(f"{where} must be a whole number of milliseconds >= 0, got {value!r}")
    return value


def _no_unknown(raw: Mapping[str, object], where: str, known: set[str]) -> None:
    unknown = sorted(map(str, set(raw) - known))  # YAML keys may be numbers too
    if unknown:
        raise ScenarioError(
            f"{where} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
