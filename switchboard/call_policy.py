"""The call policy: events from both sides in, commands out (pure).

Theory of operation. The policy sits between the Twilio media stream
(``switchboard.twilio_stream``) and the Realtime session
(``switchboard.realtime_session``). It sees their typed events, the shell's
inputs (``call_actions.ShellEvent``) and the time, and answers with
``call_actions`` commands and notices. It never touches a socket or a clock.

- Caller audio is forwarded as it came (base64 mu-law both ways).
- Model audio is cut into fixed 20 ms frames per item, each followed by a
  mark, so Twilio's echoes tell how much of which item was really played.
- Barge-in (``speech_started`` while our audio is buffered at Twilio):
  ``clear`` Twilio, truncate each item queued there (generation runs ahead of
  playback: a reply can wait behind an earlier one) at its own acknowledged
  playback offset (clamped to what was generated), unless it was heard whole;
  cancel the response only if it is still active and the server will not
  cancel it itself, drop later deltas of the cut items (protocols.md section
  6, pitfalls 1, 2, 7, 8). The call's end records those items cut the same
  way, without truncating them. A reply we cancel
  while nothing of it is buffered at Twilio is cut at the server's next event
  for it, at the playback acknowledged by then; it is truncated only if some
  of its audio went unheard (truncation deletes the transcript, 3.6).
- The greeting starts once the stream has started and the session has
  accepted its configuration (pitfall 3). A ``session.updated`` whose
  effective audio is not mu-law both ways ends the call: it would be noise.
- Deadlines (``next_deadline`` / ``tick``): the maximum call length, caller
  silence (a nudge, then a hang-up), DTMF digit collection, the Realtime
  session's 60-minute cap, and the next try to reconnect a lost session.
- Session renewal: from ``session_renew_margin_s`` before the cap, the call
  moves to a fresh session at its first quiet moment (idle, and the caller's
  last turn answered and transcribed): ``RenewSession``, the same
  configuration, then the conversation so far as text
  (``ConversationMemory``). If the session expires first, or its socket is
  lost (up to ``max_realtime_reconnects`` times a call), the move happens at
  once and an interrupted reply is asked for again; if none of our audio was
  sent yet (the phone rang, or the greeting was lost before it), the new
  session greets instead. A new session that cannot
  connect is tried again after a jittered back-off (``RECONNECT_FIRST_S``
  doubling to ``RECONNECT_MAX_S``: the service refusing connections for a
  moment is not worth a hang-up, nor a burst of retries from every call),
  until ``realtime_reconnect_budget_s`` after the loss.

The phase (``CallPhase``) is derived from that state; ``HANDLERS`` maps each
event type to its handler, and every handler is defined for every phase.
"""

from __future__ import annotations

import binascii
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from switchboard.call_actions import (
    Action,
    AddUserText,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallEnded,
    CallerTurnStarted,
    CallerTurnTranscribed,
    CancelResponse,
    ClearPlayback,
    ConfigureSession,
    CreateResponse,
    FinishCall,
    ForwardCallerAudio,
    HangUp,
    HangupRequested,
    LatencyMeasured,
    LevelsMeasured,
    PhaseChanged,
    PlayAgentAudio,
    ProblemNoted,
    RealtimeClosed,
    RenewSession,
    RunTool,
    SeedConversation,
    SendFunctionOutput,
    ShellEvent,
    ToolFinished,
    ToolReturned,
    TruncateItem,
    TwilioClosed,
    UsageReported,
)
from switchboard.call_audio import CallAudio
from switchboard.call_levels import CallLevels
from switchboard.codec import BYTES_PER_MS, FRAME_MS
from switchboard.conversation_memory import ConversationMemory
from switchboard.realtime_events import (
    ALREADY_ACTIVE,
    AudioDelta,
    AudioDone,
    FunctionCallRequested,
    InputCommitted,
    InputTranscriptCompleted,
    InputTranscriptDelta,
    InputTranscriptFailed,
    ItemTruncated,
    OutputItemAdded,
    RealtimeErrorReported,
    RealtimeEvent,
    RealtimeEventIgnored,
    RealtimeMessageRejected,
    ResponseDone,
    ResponseStarted,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
)
from switchboard.session_config import SessionConfig
from switchboard.twilio_events import (
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    PlaybackAcknowledged,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioEvent,
    TwilioMessageRejected,
)

__all__ = [
    "FATAL_REALTIME_CODES",
    "CallPhase",
    "CallPolicy",
    "PlaybackClock",
    "PolicyConfig",
    "PolicyEvent",
    "refusal_cause",
]

METER_CHUNK_BYTES = 800  # 100 ms of caller audio per level-meter update
RENEWED_NOTE = (
    "This phone call is already under way: it continues on a new connection. The "
    "conversation so far follows. Carry on from where it stands; do not greet the caller again."
)
UNGREETED_NOTE = (
    "This phone call continues on a new connection; the caller has not heard from you yet. "
    "What they said so far follows."
)

PolicyEvent = TwilioEvent | RealtimeEvent | ShellEvent

# Realtime error codes after which the session cannot carry the call.
# (``session_expired`` is not among them: the call moves to a new session.)
FATAL_REALTIME_CODES = frozenset(
    {"invalid_api_key", "beta_api_shape_disabled", "insufficient_quota"}
)
# Those codes in words, for the problem a refused session leaves on the call's record.
_REFUSAL_CAUSES = {
    "invalid_api_key": "the OpenAI API key is invalid (check OPENAI_API_KEY)",
    "insufficient_quota": "the OpenAI account has no quota left",
    "beta_api_shape_disabled": "the Realtime beta protocol is no longer served",
}


def refusal_cause(code: str) -> str:
    """A Realtime error code that refuses the session, in words."""
    return _REFUSAL_CAUSES.get(code, code)


def _refusal(event: RealtimeClosed) -> str | None:
    """The error code of a close that refuses the session for good, else None.

    The service closes a session it refuses with the reason ``<type>.<code>``: 3000
    ``invalid_request_error.invalid_api_key`` (a wrong key, after the upgrade went
    through), 4000 ``invalid_request_error.beta_api_shape_disabled`` (3.8).
    """
    _, dot, code = event.reason.partition(".")
    return code if dot and code in FATAL_REALTIME_CODES else None


# The audio format ConfigureSession asks for both ways (session_config: not configurable).
# A session.updated whose effective format differs would put noise on the phone line.
PHONE_AUDIO_FORMAT = "audio/pcmu"

MAX_DTMF_DIGITS = 64  # keys held for the model at most: a longer run is sent as it is
# A new session that failed to connect is tried again after this, doubled each time up to
# RECONNECT_MAX_S; each wait is drawn from its upper half, so calls that lost the service
# together do not all come back in the same instant.
RECONNECT_FIRST_S = 0.25
RECONNECT_MAX_S = 2.0


class CallPhase(Enum):
    AWAITING_ANSWER = "awaiting_answer"  # no Twilio `start` yet
    IDLE = "idle"  # stream live, nobody from our side active
    THINKING = "thinking"  # a response is requested or generating, nothing buffered
    SPEAKING = "speaking"  # our audio is buffered or playing at Twilio
    TOOL_WAIT = "tool_wait"  # a tool runs; its output is not sent yet
    ENDED = "ended"


class PlaybackClock(Protocol):
    """What the policy needs from the Twilio core: acknowledged playback."""

    def played_bytes(self, item_id: str, now: float | None = None) -> int: ...


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    session: SessionConfig
    greeting: str | None = None
    max_call_s: float = 1800.0
    caller_silence_s: float = 30.0
    dtmf_collect_s: float = 1.5
    session_max_s: float = 3600.0
    session_renew_margin_s: float = 60.0
    history_chars: int = 12_000  # of earlier turns given to a renewed session (~3k tokens)
    # A Realtime socket lost mid-call is replaced this many times before the call gives up.
    max_realtime_reconnects: int = 2
    # How long after a loss a new session may take to connect (tried with back-off), while
    # the caller hears nothing: past it the call is hung up.
    realtime_reconnect_budget_s: float = 15.0
    max_peer_errors: int = 50
    # The one-time <Parameter name="token"> the stream must present in `start`.
    stream_token: str | None = None


class CallPolicy:
    """One call's decisions. Feed ``begin``, then ``handle`` and ``tick``."""

    def __init__(self, config: PolicyConfig, playback: PlaybackClock) -> None:
        self.config = config
        self._playback = playback
        vad = config.session.turn_detection
        self._server_interrupts = vad is not None and vad.interrupt_response
        self.audio = CallAudio()
        self._levels = CallLevels()
        self._unmetered = bytearray()  # caller audio not yet fed to the meter
        self._ended = False
        self._forwarding = False  # caller audio flows once the session is configured
        self._stream_live = False
        self._configured = False
        self._greeted = False
        self._spoken = False  # some agent audio was sent to Twilio (the greeting reached it)
        self._response_requested = False
        self._active_response: str | None = None
        self._response_wanted = False
        self._pending_tools: set[str] = set()
        self._cut_items: set[str] = set()
        self._open_turns: set[str] = set()  # agent messages begun, not finished nor cut
        self._transcript_chars: dict[str, int] = {}  # an open item's transcript so far
        # The response we cancelled at a barge-in (the server does not, interrupt_response
        # False), until its `response.done`: audio it still sends was never heard.
        self._cancelled: str | None = None
        self._generated: dict[str, int] = {}  # bytes of audio per item, the whole call
        self._truncatable: set[str] = set()  # items of the current session (renewals)
        # Items with audio sent since Twilio's buffer was last known empty, in play order
        # (a dict as an ordered set): generation runs ahead of playback, so a reply can be
        # queued behind an earlier one still playing, and a barge-in or the end cuts both.
        self._queued: dict[str, None] = {}
        # Replies a lost session left playing: cut (by the session) once they played out.
        self._orphaned_replies: set[str] = set()
        self._dtmf_digits = ""
        self._peer_errors = 0
        self._answered_at: float | None = None
        self._last_activity = 0.0
        self._nudged = False
        self._dtmf_due: float | None = None
        self._renew_due: float | None = None
        self._renew_wanted = False  # the cap nears: renew at the next quiet moment
        # Quiet enough to renew needs the caller's last turn answered and transcribed:
        # the old session would answer it, and the new one must be told of it.
        self._caller_turn_open = False  # speech started, the reply to it has not
        self._untranscribed: set[str] = set()
        self._memory = ConversationMemory()
        self._reconnects = 0
        # A new session being opened (renewed, or replacing a lost one): since when (None
        # once it has answered), the next back-off, and when the next try is due.
        self._connecting_since: float | None = None
        self._attempt = 0  # tries to connect the session being opened
        self._reconnect_wait = RECONNECT_FIRST_S
        self._reconnect_due: float | None = None
        self._jitter = random.Random()
        self._expected_call_sid: str | None = None
        self._waiting_since: tuple[str, float] | None = None  # for LatencyMeasured

    # -- state -------------------------------------------------------------

    @property
    def _buffered(self) -> bool:
        return bool(self._queued)

    @property
    def phase(self) -> CallPhase:
        if self._ended:
            return CallPhase.ENDED
        if not self._stream_live:
            return CallPhase.AWAITING_ANSWER
        if self._buffered:
            return CallPhase.SPEAKING
        if self._response_requested or self._active_response is not None:
            return CallPhase.THINKING
        if self._pending_tools:
            return CallPhase.TOOL_WAIT
        return CallPhase.IDLE

    @property
    def next_deadline(self) -> float | None:
        if self._ended:
            return None
        due = [d for d in (self._dtmf_due, self._renew_due, self._reconnect_due) if d is not None]
        if self._answered_at is not None:
            due.append(self._answered_at + self.config.max_call_s)
            if self.phase is CallPhase.IDLE:
                due.append(self._last_activity + self.config.caller_silence_s)
        return min(due, default=None)

    # -- entry points ------------------------------------------------------

    def begin(self, now: float) -> list[Action]:
        """Configure the Realtime session; called as soon as it is open."""
        self._last_activity = now
        self._forwarding = True
        return [ConfigureSession(self.config.session)]

    def handle(self, event: PolicyEvent, now: float) -> list[Action]:
        # The per-frame events skip the phase bookkeeping: they cannot change it.
        if type(event) is AudioReceived:
            actions: list[Action] = [ForwardCallerAudio(event.payload)] if self._forwarding else []
            levels = self._measure_levels(event.payload, now)
            return actions if levels is None else [*actions, levels]
        if type(event) is MarkPlayed or (
            type(event) is PlaybackAcknowledged and not event.buffer_empty
        ):
            return []
        before = self.phase
        return self._phase_change(before, HANDLERS[type(event)](self, event, now), now)

    def tick(self, now: float) -> list[Action]:
        before = self.phase
        return self._phase_change(before, self._on_tick(now), now)

    def _phase_change(self, before: CallPhase, actions: list[Action], now: float) -> list[Action]:
        after = self.phase
        if after is CallPhase.ENDED and before is not CallPhase.ENDED:
            at = next((i for i, a in enumerate(actions) if type(a) is FinishCall), len(actions))
            actions[at:at] = self._cut_at_end(now)
        if after is not before:
            actions.append(PhaseChanged(before.value, after.value))
            if after is CallPhase.IDLE:
                self._last_activity = now
        for action in actions:
            self._memory.note(action)
        if self._renew_wanted and after is CallPhase.IDLE and self._caller_turns_settled:
            actions += self._renew("session_cap", now)
        return actions

    def _measure_levels(self, payload: str, now: float) -> LevelsMeasured | None:
        """Meter the caller's frame (still base64); the levels notice, when one is due."""
        if self._ended or not self._stream_live:
            return None
        try:
            self._unmetered += binascii.a2b_base64(payload)
        except binascii.Error:
            return None  # the payload goes to the model as it came; metering is best-effort
        if len(self._unmetered) < METER_CHUNK_BYTES:
            return None
        # One meter call per 100 ms, not per frame: each call after the loop slept runs
        # cold (~100+ us in numpy), and the levels are shown at most 4 times a second.
        self.audio.caller_meter.feed_mulaw(bytes(self._unmetered))
        self._unmetered.clear()
        agent = self.audio.outbound_level if self._buffered else self.audio.agent_meter.floor_dbfs
        return self._levels.measure(self.audio.inbound_level, agent, now)

    def _on_tick(self, now: float) -> list[Action]:
        if self._ended:
            return []
        actions: list[Action] = []
        if self._dtmf_due is not None and now >= self._dtmf_due:
            actions += self._flush_dtmf()
        if self._renew_due is not None and now >= self._renew_due:
            self._renew_due = None
            self._renew_wanted = True  # acted on in _phase_change, once the call is quiet
        if self._reconnect_due is not None and now >= self._reconnect_due:
            self._reconnect_due = None
            self._forwarding = True  # the new session's queue takes the caller's audio again
            actions += self._renew("realtime_lost", now)
        if self._answered_at is not None and now >= self._answered_at + self.config.max_call_s:
            return actions + self._hang_up("max_duration")
        if (
            self.phase is CallPhase.IDLE
            and now >= self._last_activity + self.config.caller_silence_s
        ):
            if self._nudged:
                return actions + self._hang_up("caller_silent")
            self._nudged = True
            self._last_activity = now
            actions += self._respond(
                "The caller has said nothing for a while. Briefly ask whether they are still there."
            )
        return actions

    # -- Twilio side -------------------------------------------------------

    def expect_call_sid(self, call_sid: str) -> None:
        """Bind the stream to the call Twilio created: its `start` must name this CallSid."""
        self._expected_call_sid = call_sid

    def _on_stream_started(self, event: StreamStarted, now: float) -> list[Action]:
        if self._stream_live or self._ended:
            return [ProblemNoted("twilio", "duplicate_start", "a second `start` was ignored")]
        problem = self._stream_credentials_problem(event)
        if problem is not None:
            self._end()
            return [
                ProblemNoted("twilio", "stream_refused", problem, fatal=True),
                HangUp("stream_refused"),
                FinishCall("stream_refused", close_code=1008),
            ]
        self._stream_live = True
        self._answered_at = self._last_activity = now
        self._waiting_since = ("answer", now)
        return self._greet_if_ready()

    def _stream_credentials_problem(self, event: StreamStarted) -> str | None:
        given = event.custom_parameters.get("token", "").encode()
        wanted = self.config.stream_token
        if wanted is not None and not hmac.compare_digest(given, wanted.encode()):
            return "the stream's one-time token is missing or wrong"
        if self._expected_call_sid is not None and event.call_sid != self._expected_call_sid:
            return f"the stream belongs to call {event.call_sid}, not {self._expected_call_sid}"
        return None

    def _on_dtmf(self, event: DtmfReceived, now: float) -> list[Action]:
        if self._ended:
            return []
        self._caller_active(now)
        self._dtmf_digits += event.digit
        if event.digit == "#" or len(self._dtmf_digits) >= MAX_DTMF_DIGITS:
            return self._flush_dtmf()
        self._dtmf_due = now + self.config.dtmf_collect_s
        return []

    def _on_playback(self, event: PlaybackAcknowledged, now: float) -> list[Action]:
        # Only reached with buffer_empty: ``handle`` answers the others at once.
        self._queued.clear()
        if not self._orphaned_replies:
            return []
        # What a lost session said of its last reply has played out, all of it (the buffer
        # is empty): the reply will not go on.
        cuts: list[Action] = []
        for item in sorted(self._orphaned_replies & self._open_turns - self._cut_items):
            self._cut_items.add(item)
            generated_ms = self._heard(item, now)[1]
            cuts.append(AgentTurnInterrupted(item, generated_ms, generated_ms, by="session"))
        self._open_turns.difference_update(self._orphaned_replies)
        self._orphaned_replies.clear()
        return cuts

    def _on_stream_stopped(self, event: StreamStopped | TwilioClosed, now: float) -> list[Action]:
        if self._ended:
            return []
        self._end()
        return [FinishCall("stream_stopped" if type(event) is StreamStopped else "twilio_closed")]

    def _on_twilio_rejected(self, event: TwilioMessageRejected, now: float) -> list[Action]:
        return self._peer_error("twilio", event.error.reason, event.error.message)

    def _ignore(self, event: PolicyEvent, now: float) -> list[Action]:
        return []

    # -- Realtime side -----------------------------------------------------

    def _on_session_created(self, event: SessionCreated, now: float) -> list[Action]:
        self._renew_due = now + self.config.session_max_s - self.config.session_renew_margin_s
        self._connecting_since = None  # a new session answered: no more tries
        self._reconnect_wait = RECONNECT_FIRST_S
        return []

    def _on_session_updated(self, event: SessionUpdated, now: float) -> list[Action]:
        formats = (event.input_format, event.output_format)
        if not self._ended and any(f != PHONE_AUDIO_FORMAT for f in formats):
            # Accepted, but not as asked (the effective session, protocols.md 3.2): mu-law
            # from Twilio read as something else, and the other way round.
            message = (
                f"the session's audio is {event.input_format} in and {event.output_format} "
                f"out, not the {PHONE_AUDIO_FORMAT} asked both ways"
            )
            return [
                ProblemNoted("realtime", "audio_format_refused", message, fatal=True),
                *self._hang_up("realtime_session_refused"),
            ]
        self._configured = True
        return self._greet_if_ready()

    def _on_speech_started(self, event: SpeechStarted, now: float) -> list[Action]:
        if self._ended:
            return []
        self._caller_active(now)
        self._caller_turn_open = True
        if self.config.session.transcription_model is not None:
            self._untranscribed.add(event.item_id)
        actions: list[Action] = [CallerTurnStarted(event.item_id)]
        if self._buffered:
            queued = list(self._queued)
            self._queued.clear()
            self.audio.drop_item()
            actions.append(ClearPlayback())
            for item, heard_ms, generated_ms in self._cut(queued, now):
                if item in self._truncatable:  # not an item of a session since renewed
                    actions.append(TruncateItem(item, heard_ms))
                actions.append(AgentTurnInterrupted(item, heard_ms, generated_ms))
        if self._active_response is not None and not self._server_interrupts:
            self._cancelled = self._active_response
            actions.append(CancelResponse())
        return actions

    def _drop_cancelled(self, item_id: str, now: float) -> list[Action]:
        """An item of the response we cancelled at a barge-in, at the server's first late
        event for it: nothing more of it plays, and the model and the transcript learn
        how much was heard. Twilio had played out all we had sent (else the barge-in
        cut it), so that is the acknowledged playback, not 0."""
        self._cut_items.add(item_id)
        heard_ms, generated_ms = self._heard(item_id, now)
        # Truncation deletes the item's server-side transcript (protocols.md 3.6): only
        # worth it when audio went unheard, not for the tail under a frame still held.
        unheard = item_id in self._truncatable and generated_ms - heard_ms >= FRAME_MS
        cut: list[Action] = [TruncateItem(item_id, heard_ms)] if unheard else []
        return [*cut, AgentTurnInterrupted(item_id, heard_ms, generated_ms)]

    def _cut(self, items: list[str], now: float) -> list[tuple[str, int, int]]:
        """Cut short those of ``items`` (in play order) not cut already nor heard whole:
        (item, heard_ms, generated_ms) each. An item played out but for the frame in hand,
        its audio done, was heard whole: truncating it would delete its transcript
        (protocols.md 3.6), and it is no interruption (the last mark's echo was late)."""
        cuts: list[tuple[str, int, int]] = []
        for item in items:
            if item in self._cut_items:
                continue
            heard_ms, generated_ms = self._heard(item, now)
            if item not in self._open_turns and generated_ms - heard_ms < FRAME_MS:
                continue
            self._cut_items.add(item)
            cuts.append((item, heard_ms, generated_ms))
        return cuts

    def _heard(self, item_id: str, now: float) -> tuple[int, int]:
        """(heard_ms, generated_ms): acknowledged playback, clamped to what was generated."""
        generated_ms = self._generated.get(item_id, 0) // BYTES_PER_MS
        heard_ms = self._playback.played_bytes(item_id, now) // BYTES_PER_MS
        return min(heard_ms, generated_ms), generated_ms

    def _on_speech_stopped(self, event: SpeechStopped, now: float) -> list[Action]:
        self._caller_active(now)
        self._waiting_since = ("response", now)
        return []

    def _on_input_transcript(self, event: InputTranscriptCompleted, now: float) -> list[Action]:
        self._untranscribed.discard(event.item_id)
        return [CallerTurnTranscribed(event.item_id, event.transcript)]

    def _on_input_transcript_failed(self, event: InputTranscriptFailed, now: float) -> list[Action]:
        self._untranscribed.discard(event.item_id)
        return [ProblemNoted("realtime", "transcription_failed", event.message)]

    def _on_response_started(self, event: ResponseStarted, now: float) -> list[Action]:
        self._caller_turn_open = False
        self._response_requested = False
        self._active_response = event.response_id
        return []

    def _on_output_item(self, event: OutputItemAdded, now: float) -> list[Action]:
        if event.item_type != "message":
            return []
        self._open_turns.add(event.item_id)
        return [AgentTurnStarted(event.item_id)]

    def _on_audio_delta(self, event: AudioDelta, now: float) -> list[Action]:
        if self._ended or event.item_id in self._cut_items:
            return []  # late deltas of a cut item are never played
        if not self._stream_live:
            return [ProblemNoted("policy", "audio_before_answer", "model audio before `start`")]
        try:
            audio = binascii.a2b_base64(event.delta, strict_mode=True)
        except binascii.Error:
            return self._peer_error("realtime", "invalid_base64", "audio delta is not base64")
        self._generated[event.item_id] = self._generated.get(event.item_id, 0) + len(audio)
        self._truncatable.add(event.item_id)
        if event.response_id == self._cancelled:
            return self._drop_cancelled(event.item_id, now)
        return self._play(event.item_id, self.audio.frame_outbound(event.item_id, audio), now)

    def _on_audio_done(self, event: AudioDone, now: float) -> list[Action]:
        last = self.audio.finish_item(event.item_id)
        if self._ended or event.item_id in self._cut_items:
            return []
        if event.response_id == self._cancelled:
            return self._drop_cancelled(event.item_id, now)  # its held tail was never sent
        return [] if last is None else self._play(event.item_id, [last], now)

    def _on_transcript_delta(self, event: TranscriptDelta, now: float) -> list[Action]:
        offset = self._transcript_chars.get(event.item_id, 0)
        self._transcript_chars[event.item_id] = offset + len(event.delta)
        return [AgentTranscriptGrew(event.item_id, event.delta, offset)]

    def _on_transcript_done(self, event: TranscriptDone, now: float) -> list[Action]:
        self._open_turns.discard(event.item_id)
        self._transcript_chars.pop(event.item_id, None)
        if event.item_id in self._cut_items:
            return []  # the interruption notice already told what was heard
        if event.response_id == self._cancelled:
            return self._drop_cancelled(event.item_id, now)
        return [AgentTurnFinished(event.item_id, event.transcript)]

    def _on_function_call(self, event: FunctionCallRequested, now: float) -> list[Action]:
        if self._ended:
            return []
        self._pending_tools.add(event.call_id)
        return [RunTool(event.call_id, event.name, event.arguments)]

    def _on_response_done(self, event: ResponseDone, now: float) -> list[Action]:
        self._response_requested = False
        self._active_response = None
        if event.response_id == self._cancelled:
            self._cancelled = None
        actions: list[Action] = []
        if event.usage is not None:
            actions.append(UsageReported(event.response_id, event.usage))
        if self._response_wanted and not self._pending_tools and not self._ended:
            actions += self._respond(None)
        return actions

    def _on_realtime_error(self, event: RealtimeErrorReported, now: float) -> list[Action]:
        code = event.code or event.type
        if code == "session_expired" and not self._ended:
            # Renewal at a quiet moment did not come in time: move now.
            return [
                ProblemNoted("realtime", code, event.message),
                *self._renew("session_expired", now),
            ]
        if code in FATAL_REALTIME_CODES:
            # A wrong key's message quotes the key's ends ("sk-...9876"): our words instead.
            said = refusal_cause(code) if code == "invalid_api_key" else event.message
            return [
                ProblemNoted("realtime", code, said, fatal=True),
                *self._hang_up(f"realtime_{code}"),
            ]
        if event.refused_update and not self._configured and not self._ended:
            # Never configured, the session keeps pcm16 at 24 kHz: noise on the phone line.
            return [
                ProblemNoted(
                    "realtime",
                    code,
                    f"the session could not be configured: {event.message}",
                    fatal=True,
                ),
                *self._hang_up("realtime_session_refused"),
            ]
        if code == ALREADY_ACTIVE and not self._ended:
            # Our response.create lost to one the server started first (its VAD, say),
            # which began before what we asked about (a tool's output, a key pressed):
            # ask again once it is done, or that is never answered.
            self._response_requested = False
            return [ProblemNoted("realtime", code, event.message), *self._respond(None)]
        if event.refused_response and not self._ended:
            # No response.done will come for it: without this the call would stay
            # "thinking", with no greeting, no silence nudge and no silence hang-up. One
            # wanted meanwhile (keys pressed, a tool's output) is asked for now.
            self._response_requested = False
            wanted = self._respond(None) if self._response_wanted else []
            return [ProblemNoted("realtime", code, event.message), *wanted]
        return [ProblemNoted("realtime", code, event.message)]

    def _on_realtime_rejected(self, event: RealtimeMessageRejected, now: float) -> list[Action]:
        return self._peer_error("realtime", event.error.reason, event.error.message)

    # -- shell side --------------------------------------------------------

    def _on_tool_finished(self, event: ToolFinished, now: float) -> list[Action]:
        if event.call_id not in self._pending_tools or self._ended:
            return []
        self._pending_tools.discard(event.call_id)
        actions: list[Action] = [
            SendFunctionOutput(event.call_id, event.output),
            ToolReturned(event.call_id, event.output),
        ]
        if not self._pending_tools:
            actions += self._respond(None)
        return actions

    def _on_call_ended(self, event: CallEnded, now: float) -> list[Action]:
        if self._ended:
            return []
        self._end()
        return [FinishCall(event.status)]

    def _on_hangup_requested(self, event: HangupRequested, now: float) -> list[Action]:
        return [] if self._ended else self._hang_up(event.reason)

    def _on_realtime_closed(self, event: RealtimeClosed, now: float) -> list[Action]:
        if self._ended:
            return []
        message = f"the Realtime socket closed ({event.code}: {event.reason})"
        if (code := _refusal(event)) is not None:
            # Refused (a bad key, no quota), not dropped: another session would be refused
            # the same way, so no reconnect is tried, however much budget is left.
            cause = f"the Realtime service refused the session: {refusal_cause(code)}"
            return [
                ProblemNoted("realtime", code, f"{cause}; {message}", fatal=True),
                *self._hang_up(f"realtime_{code}"),
            ]
        if self._connecting_since is not None:
            return self._reconnect_failed(message, now)
        if self._reconnects < self.config.max_realtime_reconnects:
            # A dropped connection, not a refusal (those end the call at their error):
            # go on in a new session, told of the call so far.
            self._reconnects += 1
            return [
                ProblemNoted("realtime", "closed", f"{message}; reconnecting"),
                *self._renew("realtime_lost", now),
            ]
        return [
            ProblemNoted("realtime", "closed", message, fatal=True),
            *self._hang_up("realtime_closed"),
        ]

    def _reconnect_failed(self, message: str, now: float) -> list[Action]:
        """The new session did not connect (refused, unreachable, closed before it said
        `session.created`): try again after a back-off, within the budget."""
        assert self._connecting_since is not None
        wait = self._reconnect_wait * (0.5 + 0.5 * self._jitter.random())
        self._reconnect_wait = min(2 * self._reconnect_wait, RECONNECT_MAX_S)
        spent = now + wait - self._connecting_since
        if spent > self.config.realtime_reconnect_budget_s:
            budget = self.config.realtime_reconnect_budget_s
            gave_up = f"no new Realtime session connected in {budget:g} s; last: {message}"
            return [
                ProblemNoted("realtime", "closed", gave_up, fatal=True),
                *self._hang_up("realtime_closed"),
            ]
        self._reconnect_due = now + wait
        self._forwarding = False  # no socket will take it: the next session gets new audio
        return [
            ProblemNoted("realtime", "reconnect_failed", f"{message}; next try in {wait:.2f} s")
        ]

    # -- helpers -----------------------------------------------------------

    def _greet_if_ready(self) -> list[Action]:
        if self._greeted or not (self._stream_live and self._configured):
            return []
        self._greeted = True
        if self.config.greeting:
            return self._respond(
                f'Start the call by saying, in your own voice: "{self.config.greeting}"'
            )
        return self._respond("The person just answered the phone. Greet them and say why you call.")

    def _respond(self, instructions: str | None) -> list[Action]:
        """Ask for a response now, or as soon as the one in flight is done. A response's
        ``instructions`` replace the session's for that response, not add to them: the
        call's own go first, or the greeting would not know why it calls."""
        if self._response_requested or self._active_response is not None:
            self._response_wanted = True
            return []
        self._response_wanted = False
        self._response_requested = True
        if instructions is not None and self.config.session.instructions:
            instructions = f"{self.config.session.instructions}\n\n{instructions}"
        return [CreateResponse(instructions)]

    def _play(self, item_id: str, frames: list[bytes], now: float) -> list[Action]:
        if not frames:
            return []
        self._spoken = True
        self._queued[item_id] = None
        actions: list[Action] = [PlayAgentAudio(item_id, tuple(frames))]
        if self._waiting_since is not None:
            kind, since = self._waiting_since
            self._waiting_since = None
            actions.append(LatencyMeasured(kind, round((now - since) * 1000, 1)))
        return actions

    @property
    def _caller_turns_settled(self) -> bool:
        return not self._caller_turn_open and not self._untranscribed

    def _renew(self, reason: str, now: float) -> list[Action]:
        """Move to a fresh session: configure it as the first, tell it the call so far."""
        if self._connecting_since is None:
            self._connecting_since = now  # a try after a back-off keeps the first's time
            self._attempt = 0
        self._attempt += 1
        generating = self._response_requested or self._active_response is not None
        interrupted = generating or bool(self._pending_tools)
        self._renew_wanted = False
        self._renew_due = None  # set again by the new session's `session.created`
        self._configured = self._caller_turn_open = False
        self._untranscribed.clear()
        self._response_requested = self._response_wanted = False
        self._active_response = self._cancelled = None
        self._pending_tools.clear()  # their outputs belong to the old session
        # Its items cannot be truncated in the new one; what of them was generated and
        # heard still counts when one is cut (a barge-in, the call's end) after it.
        self._truncatable.clear()
        spent = now - self._connecting_since
        # The old session's replies will never go on: those none of whose audio is still to
        # play are cut now, where heard (nothing, if none was sent); those still playing
        # once they played out, unless a barge-in or the end cuts them first.
        lost = self._cut(sorted(self._open_turns.difference(self._queued)), now)
        self._open_turns.difference_update(item for item, _, _ in lost)
        self._orphaned_replies |= self._open_turns & self._queued.keys()
        cuts = [AgentTurnInterrupted(item, heard, made, by="session") for item, heard, made in lost]
        for cut in cuts:  # before the new session is told what was said: only what was heard
            self._memory.note(cut)
        actions: list[Action] = [
            *cuts,
            RenewSession(reason, self.config.realtime_reconnect_budget_s - spent, self._attempt),
            ConfigureSession(self.config.session),
        ]
        said = self._memory.recent(self.config.history_chars)
        if not self._spoken:
            # The caller has heard nothing from us (the phone rings, or the greeting was
            # lost before any of its audio was sent): the new session greets as the first
            # would have, once configured, and is not told that the call is under way.
            self._greeted = False
            said = tuple(turn for turn in said if turn[0] == "user")  # ours went unheard
            if said:
                actions.append(SeedConversation(UNGREETED_NOTE, said))
            return actions
        actions.append(SeedConversation(RENEWED_NOTE, said))
        if interrupted:
            actions += self._respond(None)  # the reply the old session could not finish
        return actions

    def _flush_dtmf(self) -> list[Action]:
        # Only called with digits collected (on `#` or at the collection deadline).
        digits, self._dtmf_digits, self._dtmf_due = self._dtmf_digits, "", None
        return [
            AddUserText(f"[The caller pressed these keys on the phone: {digits}]"),
            *self._respond(None),
        ]

    def _caller_active(self, now: float) -> None:
        self._last_activity = now
        self._nudged = False

    def _peer_error(self, source: str, reason: str, message: str) -> list[Action]:
        self._peer_errors += 1
        actions: list[Action] = [ProblemNoted(source, reason, message)]
        if self._peer_errors == self.config.max_peer_errors:
            actions += self._hang_up(f"{source}_protocol_errors")
        return actions

    def _cut_at_end(self, now: float) -> list[Action]:
        """Replies the call's end cut short (the caller hung up mid-sentence): recorded
        with what was played of them, as a barge-in's are, not left open. That includes
        those generated in full but still playing or queued (generation runs ahead of
        playback)."""
        items = [*self._queued, *sorted(self._open_turns.difference(self._queued))]
        cuts = self._cut(items, now)
        self._open_turns.clear()
        return [
            AgentTurnInterrupted(item, heard, generated, by="end")
            for item, heard, generated in cuts
        ]

    def _hang_up(self, reason: str) -> list[Action]:
        if self._ended:
            return []
        self._end()
        return [HangUp(reason), FinishCall(reason)]

    def _end(self) -> None:
        self._ended = True
        self._forwarding = False


_Handler = Callable[..., list[Action]]  # (policy, event of the keyed type, now)

# One handler per event type; each is total over the phases (see the tests'
# phase x event table). Events not listed here are rejected by the cores first.
HANDLERS: dict[type, _Handler] = {
    StreamStarted: CallPolicy._on_stream_started,
    DtmfReceived: CallPolicy._on_dtmf,
    PlaybackAcknowledged: CallPolicy._on_playback,
    StreamStopped: CallPolicy._on_stream_stopped,
    TwilioClosed: CallPolicy._on_stream_stopped,
    TwilioMessageRejected: CallPolicy._on_twilio_rejected,
    SessionCreated: CallPolicy._on_session_created,
    SessionUpdated: CallPolicy._on_session_updated,
    SpeechStarted: CallPolicy._on_speech_started,
    SpeechStopped: CallPolicy._on_speech_stopped,
    InputTranscriptCompleted: CallPolicy._on_input_transcript,
    ResponseStarted: CallPolicy._on_response_started,
    OutputItemAdded: CallPolicy._on_output_item,
    AudioDelta: CallPolicy._on_audio_delta,
    AudioDone: CallPolicy._on_audio_done,
    TranscriptDelta: CallPolicy._on_transcript_delta,
    TranscriptDone: CallPolicy._on_transcript_done,
    FunctionCallRequested: CallPolicy._on_function_call,
    ResponseDone: CallPolicy._on_response_done,
    RealtimeErrorReported: CallPolicy._on_realtime_error,
    RealtimeMessageRejected: CallPolicy._on_realtime_rejected,
    ToolFinished: CallPolicy._on_tool_finished,
    HangupRequested: CallPolicy._on_hangup_requested,
    CallEnded: CallPolicy._on_call_ended,
    RealtimeClosed: CallPolicy._on_realtime_closed,
    InputTranscriptFailed: CallPolicy._on_input_transcript_failed,
    # Known and deliberately without effect on the call:
    StreamConnected: CallPolicy._ignore,
    MarkPlayed: CallPolicy._ignore,  # PlaybackAcknowledged carries what matters
    InputCommitted: CallPolicy._ignore,
    InputTranscriptDelta: CallPolicy._ignore,
    ItemTruncated: CallPolicy._ignore,
    RealtimeEventIgnored: CallPolicy._ignore,
}
