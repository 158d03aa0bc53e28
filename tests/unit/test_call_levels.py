"""The live level meters: when a call's levels become a notice, and what it says."""

from __future__ import annotations

import base64
import itertools

import numpy as np

from switchboard.call_actions import ForwardCallerAudio, LevelsMeasured
from switchboard.call_levels import CallLevels
from switchboard.call_policy import CallPolicy, PolicyConfig
from switchboard.codec import mulaw_encode
from switchboard.live_events import live_event
from switchboard.session_config import SessionConfig
from switchboard.twilio_events import AudioReceived, MediaFormat, StreamStarted


def test_a_change_is_sent_at_once_then_at_most_every_interval() -> None:
    levels = CallLevels(interval_s=0.25, step_db=3.0, floor_dbfs=-60.0)
    assert levels.measure(-20.0, -96.0, 1.0) == LevelsMeasured(-20.0, -60.0)
    assert levels.measure(-10.0, -96.0, 1.1) is None  # too soon
    assert levels.measure(-10.0, -96.0, 1.25) == LevelsMeasured(-10.0, -60.0)
    assert levels.measure(-11.5, -59.0, 2.0) is None  # under 3 dB either way
    assert levels.measure(-11.5, -40.04, 2.0) == LevelsMeasured(-11.5, -40.0)


def test_silence_and_line_noise_send_nothing() -> None:
    levels = CallLevels()
    assert [levels.measure(db, -96.0, t / 50) for t, db in enumerate((-96, -70, -65, -61))] == [
        None
    ] * 4


class NothingPlayed:
    def played_bytes(self, item_id: str, now: float | None = None) -> int:
        return 0


def tone_frame(amplitude: int) -> str:
    t = np.arange(160) / 8000
    pcm = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    return base64.b64encode(mulaw_encode(pcm)).decode()


def test_the_policy_meters_the_callers_frames_and_reports_their_level() -> None:
    policy = CallPolicy(PolicyConfig(session=SessionConfig(instructions="x")), NothingPlayed())
    policy.begin(0.0)
    format_ = MediaFormat("audio/x-mulaw", 8000, 1)
    policy.handle(StreamStarted(1, "MZ1", "AC1", "CA1", ("inbound",), format_, {}), 0.0)
    loud, quiet = tone_frame(16000), base64.b64encode(b"\xff" * 160).decode()
    notices: list[tuple[float, LevelsMeasured]] = []
    for n in range(50):  # a second: half loud, half silent
        now = n * 0.02
        frame = AudioReceived(n + 2, "MZ1", "inbound", n + 1, n * 20, loud if n < 25 else quiet)
        actions = policy.handle(frame, now)
        assert actions[0] == ForwardCallerAudio(frame.payload)
        notices += [(now, a) for a in actions[1:] if isinstance(a, LevelsMeasured)]
    assert notices, "a loud caller is reported"
    first_at, first = notices[0]
    # Reported once the first 100 ms chunk is metered (its fifth frame, at 80 ms).
    assert first_at == 0.08 and first.caller_dbfs > -20.0
    # A sine of peak 16000 has an RMS of 11314: -9.2 dBFS, which the meter settles at.
    assert -10.0 < max(n.caller_dbfs for _, n in notices) < -8.5
    assert all(n.agent_dbfs == -60.0 for _, n in notices)  # the agent is silent
    assert all(b - a >= 0.25 for (a, _), (b, _) in itertools.pairwise(notices))
    assert notices[-1][1].caller_dbfs < first.caller_dbfs - 3  # the level fell after the tone


def test_levels_are_a_live_event_the_console_reads() -> None:
    event = live_event("c1", LevelsMeasured(-12.5, -60.0), 0.0)
    assert event is not None
    assert (event["type"], event["caller_dbfs"], event["agent_dbfs"]) == ("levels", -12.5, -60.0)
