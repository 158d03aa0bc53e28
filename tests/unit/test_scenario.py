from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.scenario import CLIPS_DIR, DEFAULT_AFTER_AGENT_MS, load_scenario, parse_scenario
from switchboard.errors import ScenarioError

EXAMPLE = """
name: dental
numbers:
  default: {outcome: human, answer_after_s: 0.5}
  "+15550000002": {outcome: busy}
  "+15550000005": {outcome: voicemail}
caller:
  - say: Hello? Who is this?
    clip: caller_hello.ulaw
    after_agent_ms: 300
  - say: Wait, sorry
    clip: caller_interrupt.ulaw
    barge_in_ms: 800
  - dtmf: "12#"
    at_ms: 9000
  - hangup: true
assistant:
  - say: Hello! This is Ava.
    clip: agent_greeting.ulaw
  - tool_call: {name: check_availability, arguments: {day: monday}}
  - say: Monday at four works.
max_call_s: 120
"""


def test_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(EXAMPLE)
    scenario = load_scenario(path)
    assert scenario.name == "dental"
    assert scenario.behaviour_for("+15550000002").outcome == "busy"
    voicemail = scenario.behaviour_for("+15550000005")
    assert (voicemail.outcome, voicemail.answered_by) == ("voicemail", "machine_end_beep")
    assert scenario.behaviour_for("+15559999999").answer_after_s == 0.5
    hello, barge, dtmf, hangup = scenario.caller
    assert hello.clip == CLIPS_DIR / "caller_hello.ulaw"
    assert (hello.after_agent_ms, barge.barge_in_ms, dtmf.at_ms) == (300, 800, 9000)
    assert dtmf.dtmf == "12#"
    assert hangup.hangup and hangup.after_agent_ms == DEFAULT_AFTER_AGENT_MS
    assert scenario.assistant[1].tool_name == "check_availability"
    assert scenario.assistant[1].tool_arguments == {"day": "monday"}
    assert scenario.max_call_s == 120


def test_json_and_clip_next_to_file(tmp_path: Path) -> None:
    (tmp_path / "mine.ulaw").write_bytes(b"\xff" * 160)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"caller": [{"clip": "mine.ulaw", "after_agent_ms": 0}]}))
    scenario = load_scenario(path)
    assert scenario.caller[0].clip == tmp_path / "mine.ulaw"
    assert scenario.caller[0].after_agent_ms == 0
    assert scenario.default_number.outcome == "human"


N = "+15550000001"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "scenario must be a mapping"),
        ({"bogus": 1}, "unknown field"),
        ({"numbers": {"default": {"outcome": "maybe"}}}, "outcome 'maybe'"),
        ({"numbers": {N: {"answered_by": "robot"}}}, "answered_by 'robot'"),
        ({"numbers": {N: {"answer_after_s": -1}}}, "answer_after_s must be a finite number"),
        ({"numbers": {N: {"hangup_after_s": 0}}}, "greater than 0"),
        # YAML reads an unquoted +15550000001 as an integer: it would never match.
        ({"numbers": {15550000001: {"outcome": "busy"}}}, "must be a quoted string"),
        ({"numbers": {"+1 555 000 0001": {"outcome": "busy"}}}, "E.164 form: '[+]15550000001'"),
        ({"numbers": {"+1": {"outcome": "busy"}}}, "'[+]1' is not a phone number"),
        ({"numbers": {"mom": {"outcome": "busy"}}}, "'mom' is not a phone number"),
        ({"caller": [{"hangup": "false"}]}, "hangup must be true or false, got 'false'"),
        ({"caller": {}}, "caller must be a list"),
        ({"caller": [{"say": "hi"}]}, "exactly one of clip, dtmf or hangup"),
        ({"caller": [{"dtmf": "1", "hangup": True}]}, "exactly one of clip, dtmf or hangup"),
        ({"caller": [{"dtmf": "x"}]}, "dtmf 'x'"),
        ({"caller": [{"dtmf": "1", "at_ms": 1, "barge_in_ms": 2}]}, "more than one timing"),
        ({"caller": [{"dtmf": "1", "at_ms": 1.5}]}, "whole number of milliseconds"),
        ({"caller": [{"clip": "nope.ulaw"}]}, "clip 'nope.ulaw' not found"),
        ({"assistant": [{}]}, "exactly one of say or tool_call"),
        ({"assistant": [{"tool_call": {"name": ""}}]}, "tool_call.name must be a non-empty"),
        ({"assistant": [{"tool_call": {"name": "x", "arguments": 3}}]}, "must be a mapping"),
        ({"assistant": [{"say": "x", "voice": "y"}]}, "unknown field"),
        ({"max_call_s": True}, "max_call_s must be a finite number"),
        ({"max_call_s": float("nan")}, "max_call_s must be a finite number"),
        ({"max_call_s": float("inf")}, "max_call_s must be a finite number"),
        ({1: "a", "foo": "b"}, "unknown field.*1, foo"),
    ],
)
def test_bad_scenarios_name_the_field(data: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(data)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ScenarioError, match="not valid json"):
        load_scenario(bad)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1, 2")
    with pytest.raises(ScenarioError, match="not valid yaml"):
        load_scenario(bad_yaml)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"caller: []\n# caf\xe9\n")
    with pytest.raises(ScenarioError, match="is not UTF-8 text"):
        load_scenario(latin)
