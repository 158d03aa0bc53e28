"""What the simulated caller says, and when (the scenario's ``caller`` turns).

Theory of operation
-------------------
Time is stream time in ms (``now``; 0 = the ``start`` message). The agent's
speech is known only from the phone's playout: each run of played audio
(``RunStarted``..``RunEnded``) is part of a *reply*; runs separated by less
than ``REPLY_GAP_MS`` of silence belong to the same reply, unless the
first was cut by a ``clear`` (the agent was interrupted) or a caller turn
started in between (the agent is answering it).

Turns run one at a time, in order. A turn becomes due:

* ``at_ms``: at that stream time;
* ``barge_in_ms``: that long after the next reply began playing;
* otherwise (``after_agent_ms``): once the next reply has stopped playing and
  the agent has been quiet that long.

"The next reply" is the first reply that started after the previous turn
started, or was still playing when the previous turn ended (for the first
turn: any reply). So a caller who spoke over the agent waits for the agent to
finish before answering. A clip turn speaks the clip; a DTMF turn sends each
digit as a ``dtmf`` message at the end of its tone (``w`` pauses 500 ms); a
hang-up turn hangs up. Injected audio queues behind whatever is being said.

``frame(now)`` returns the next 160-byte frame (silence 0xFF when quiet), the
digits to report now and whether the caller hangs up.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.scenario import CLIPS_DIR, CallerTurn
from switchboard.codec import FRAME_BYTES, MULAW_SILENCE, mulaw_encode
from switchboard.dtmf import dtmf_tone

from .playout import PlayoutEvent, RunEnded, RunStarted

__all__ = [
    "REPLY_GAP_MS",
    "CallerScript",
    "FrameOut",
    "Utterance",
    "beep",
    "default_turns",
    "dtmf_utterance",
]

REPLY_GAP_MS = 250.0
DTMF_TONE_MS = 100
DTMF_GAP_MS = 100
DTMF_PAUSE_MS = 500  # "w"
SILENCE_BYTE = bytes([MULAW_SILENCE])


@dataclass(frozen=True, slots=True)
class Utterance:
    audio: bytes
    digits: tuple[tuple[int, str], ...] = ()  # (byte offset at which it is reported, digit)
    label: str = ""


@dataclass(frozen=True, slots=True)
class FrameOut:
    audio: bytes
    digits: tuple[str, ...] = ()
    hangup: bool = False
    said: tuple[str, ...] = ()  # labels of utterances that started in this frame


@dataclass(slots=True)
class _Reply:
    start: float
    end: float | None = None
    cut: bool = False  # cleared: the agent was interrupted, the reply is over


@dataclass(slots=True)
class _Speaking:
    utterance: Utterance
    from_turn: bool
    offset: int = 0


@dataclass(slots=True)
class CallerScript:
    turns: Iterator[CallerTurn]
    load_clip: Callable[[Path], bytes]
    dtmf_audio: bool = True
    _next_turn: CallerTurn | None = None
    _exhausted: bool = False
    _queue: deque[_Speaking] = field(default_factory=deque)
    _replies: deque[_Reply] = field(default_factory=lambda: deque(maxlen=32))
    _prev_start: float = 0.0
    _prev_end: float = 0.0
    _first_turn: bool = True
    _hangup: bool = False

    @classmethod
    def of(
        cls, turns: Iterable[CallerTurn], load_clip: Callable[[Path], bytes], dtmf_audio: bool
    ) -> CallerScript:
        return cls(iter(turns), load_clip, dtmf_audio)

    # -- inputs --------------------------------------------------------------------------

    def on_playout(self, event: PlayoutEvent) -> None:
        match event:
            case RunStarted(at_ms=at):
                last = self._replies[-1] if self._replies else None
                if (
                    last is not None
                    and last.end is not None
                    and not last.cut
                    and at - last.end < REPLY_GAP_MS
                    and self._prev_start < last.end  # the caller has not spoken since
                ):
                    last.end = None
                else:
                    self._replies.append(_Reply(at))
            case RunEnded(at_ms=at, reason=reason) if self._replies:
                self._replies[-1].end = at
                self._replies[-1].cut = reason == "cleared"

    def inject(self, utterance: Utterance, first: bool = False) -> None:
        speaking = _Speaking(utterance, from_turn=False)
        if first:
            self._queue.appendleft(speaking)
        else:
            self._queue.append(speaking)

    def hang_up(self) -> None:
        self._hangup = True

    # -- output --------------------------------------------------------------------------

    def frame(self, now: float) -> FrameOut:
        if self._hangup:
            return FrameOut(SILENCE_BYTE * FRAME_BYTES, hangup=True)
        if not self._queue:
            self._maybe_start_turn(now)
            if self._hangup:
                return FrameOut(SILENCE_BYTE * FRAME_BYTES, hangup=True)
        audio = bytearray()
        digits: list[str] = []
        said: list[str] = []
        while len(audio) < FRAME_BYTES and self._queue:
            speaking = self._queue[0]
            utt = speaking.utterance
            if speaking.offset == 0 and utt.label:
                said.append(utt.label)
            take = min(FRAME_BYTES - len(audio), len(utt.audio) - speaking.offset)
            end = speaking.offset + take
            audio += utt.audio[speaking.offset : end]
            digits.extend(d for at, d in utt.digits if speaking.offset < at <= end)
            speaking.offset = end
            if end >= len(utt.audio):
                self._queue.popleft()
                if speaking.from_turn:
                    self._prev_end = now + len(audio) / 8
        audio += SILENCE_BYTE * (FRAME_BYTES - len(audio))
        return FrameOut(bytes(audio), tuple(digits), said=tuple(said))

    # -- turns ---------------------------------------------------------------------------

    def _peek(self) -> CallerTurn | None:
        if self._next_turn is None and not self._exhausted:
            self._next_turn = next(self.turns, None)
            self._exhausted = self._next_turn is None
        return self._next_turn

    def _maybe_start_turn(self, now: float) -> None:
        turn = self._peek()
        if turn is None or not self._due(turn, now):
            return
        self._next_turn = None
        self._first_turn = False
        self._prev_start = self._prev_end = now
        if turn.hangup:
            self._hangup = True
        elif turn.dtmf:
            utt = dtmf_utterance(turn.dtmf, with_audio=self.dtmf_audio)
            self._queue.append(_Speaking(utt, from_turn=True))
        elif turn.clip is not None:
            label = turn.say or turn.clip.name
            self._queue.append(_Speaking(Utterance(self.load_clip(turn.clip), label=label), True))

    def _due(self, turn: CallerTurn, now: float) -> bool:
        if turn.at_ms is not None:
            return now >= turn.at_ms
        reply = self._next_reply()
        if reply is None:
            return False
        if turn.barge_in_ms is not None:
            return now >= reply.start + turn.barge_in_ms
        last_end = self._replies[-1].end
        return last_end is not None and now >= last_end + turn.after_agent_ms

    def _next_reply(self) -> _Reply | None:
        for reply in self._replies:
            if (
                self._first_turn
                or reply.start >= self._prev_start
                or reply.end is None
                or reply.end > self._prev_end
            ):
                return reply
        return None


def dtmf_utterance(digits: str, with_audio: bool = True) -> Utterance:
    """Tones (or silence) for ``digits``; each digit is reported at the end of its tone."""
    audio = bytearray()
    marks: list[tuple[int, str]] = []
    gap = SILENCE_BYTE * (DTMF_GAP_MS * 8)
    for digit in digits:
        if digit == "w":
            audio += SILENCE_BYTE * (DTMF_PAUSE_MS * 8)
            continue
        tone = (
            mulaw_encode(dtmf_tone(digit, DTMF_TONE_MS))
            if with_audio
            else SILENCE_BYTE * (DTMF_TONE_MS * 8)
        )
        audio += tone
        marks.append((len(audio), digit))
        audio += gap
    return Utterance(bytes(audio), tuple(marks), label=f"dtmf:{digits}")


def beep(freq_hz: float = 1000.0, ms: int = 500, amplitude: float = 0.3) -> bytes:
    """The voicemail beep (and the stand-in for ``<Say>``/``<Play>`` audio)."""
    t = np.arange(ms * 8) / 8000.0
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)
    return mulaw_encode(pcm)


_DEFAULT_REPLIES = (
    ("What times do you have on Monday?", "caller_question.ulaw"),
    ("Yes, four o'clock works for me.", "caller_yes.ulaw"),
    ("Great, thank you. Goodbye.", "caller_thanks.ulaw"),
)


def default_turns() -> Iterator[CallerTurn]:
    """No scenario: say hello on answering, then answer every agent turn with a short clip."""
    yield CallerTurn(say="Hello? Who is this?", clip=CLIPS_DIR / "caller_hello.ulaw", at_ms=300)
    for say, clip in itertools.cycle(_DEFAULT_REPLIES):
        yield CallerTurn(say=say, clip=CLIPS_DIR / clip)
