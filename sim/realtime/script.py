"""What the emulated model says and what it hears, from the scenario.

``Script.next_reply`` walks ``Scenario.assistant`` (one entry per response,
in order), then falls back to the default: a spoken reply rotating the
``agent_*`` clips. ``Script.caller_transcript`` names a committed caller
turn:

1. If the audio is mu-law and contains a slice of the clip of a scenario
   caller turn (the Twilio emulator sends clips byte for byte and a pcmu
   bridge passes them through), that turn's ``say``.
2. Else the next scenario caller turn with a ``say``, in order.
3. Else, if it contains a slice of a built-in ``caller_*`` clip, that clip's
   text from ``sim/make_clips.py``.
4. Else a placeholder naming the duration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from sim.make_clips import CLIPS
from sim.realtime.audio import CALLER_CLIPS, CLIPS_DIR, PCMU, AudioFormat, ClipLibrary, Speech
from sim.scenario import Scenario
from switchboard.codec import mulaw_decode

__all__ = ["Reply", "Script", "SpeechReply", "ToolReply"]

PROBE_BYTES = 160
PROBE_MIN_ENERGY = (32768 * 10 ** (-30 / 20)) ** 2  # -30 dBFS: speech, not a pause


@dataclass(frozen=True, slots=True)
class SpeechReply:
    speech: Speech


@dataclass(frozen=True, slots=True)
class ToolReply:
    name: str
    arguments: Mapping[str, object] = field(default_factory=dict)

    @property
    def arguments_json(self) -> str:
        return json.dumps(dict(self.arguments), separators=(", ", ": "))


Reply = SpeechReply | ToolReply


def _probes(clip: bytes, count: int = 6) -> tuple[bytes, ...]:
    """The loudest 20 ms window of each sixth of a clip.

    Speech windows, unlike pauses, never recur in other audio; one per sixth
    means a turn the VAD split in two still contains a probe in each part.
    """
    windows = len(clip) // PROBE_BYTES
    if windows == 0:
        return ()
    pcm = mulaw_decode(clip[: windows * PROBE_BYTES]).astype(np.float64)
    energy = (pcm.reshape(windows, PROBE_BYTES) ** 2).mean(axis=1)
    picks = {
        int(part[np.argmax(energy[part])])
        for part in np.array_split(np.arange(windows), min(count, windows))
        if energy[part].max() >= PROBE_MIN_ENERGY
    }
    return tuple(clip[i * PROBE_BYTES : (i + 1) * PROBE_BYTES] for i in sorted(picks))


class Script:
    """One session's walk through a scenario (each session starts from the top, after
    any assistant turns the client gives it as history)."""

    def __init__(self, scenario: Scenario | None, clips: ClipLibrary) -> None:
        self.scenario = scenario
        self.clips = clips
        self._assistant = 0
        self._default = 0
        self._caller = 0
        turns = scenario.caller if scenario is not None else ()
        self._said = [i for i, t in enumerate(turns) if t.say]
        self._scenario_probes: list[tuple[int, str, tuple[bytes, ...]]] = []
        for i in self._said:
            path = turns[i].clip
            if path is not None:
                self._scenario_probes.append((i, turns[i].say or "", _probes(clips.load(path))))
        self._builtin_probes = [
            (CLIPS[name][2], _probes(clips.load(CLIPS_DIR / f"{name}.ulaw")))
            for name in CALLER_CLIPS
            if (CLIPS_DIR / f"{name}.ulaw").is_file()
        ]

    def next_reply(self) -> Reply:
        turns = self.scenario.assistant if self.scenario is not None else ()
        if self._assistant < len(turns):
            turn = turns[self._assistant]
            self._assistant += 1
            if turn.tool_name is not None:
                return ToolReply(turn.tool_name, turn.tool_arguments)
            return SpeechReply(self.clips.speech_for(turn.say or "", turn.clip))
        reply = SpeechReply(self.clips.default_reply(self._default))
        self._default += 1
        return reply

    def assistant_turn_given(self) -> None:
        """The client created an assistant message (an earlier turn, carried into a new
        session): the scripted model goes on from the turn after it."""
        turns = self.scenario.assistant if self.scenario is not None else ()
        if self._assistant < len(turns):
            self._assistant += 1

    def caller_transcript(self, audio: bytes, fmt: AudioFormat) -> str:
        if fmt == PCMU:
            for index, say, probes in self._scenario_probes:
                if any(p in audio for p in probes):
                    self._caller = max(self._caller, self._said.index(index) + 1)
                    return say
        if self._caller < len(self._said) and self.scenario is not None:
            say = self.scenario.caller[self._said[self._caller]].say or ""
            self._caller += 1
            return say
        if fmt == PCMU:
            for text, probes in self._builtin_probes:
                if any(p in audio for p in probes):
                    return text
        return f"(unrecognised speech, {fmt.ms(len(audio)) / 1000:.1f} s)"
