"""The call policy, with plain lists of events and literal times.

The first part is the phase x event table: every event type the policy
accepts, fed in every phase, with the commands expected. The second part
walks the flows and failure modes of protocols.md section 6 one by one.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

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
    ToolFinished,
    ToolReturned,
    TruncateItem,
    TwilioClosed,
    UsageReported,
)
from switchboard.call_policy import (
    HANDLERS,
    MAX_DTMF_DIGITS,
    PHONE_AUDIO_FORMAT,
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
    RENEWED_NOTE,
    UNGREETED_NOTE,
    CallPhase,
    CallPolicy,
    PolicyConfig,
    PolicyEvent,
    refusal_cause,
)
from switchboard.codec import FRAME_BYTES, MULAW_SILENCE
from switchboard.errors import RealtimeProtocolError, TwilioProtocolError
from switchboard.playback import PlaybackTracker
from switchboard.realtime_events import (
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
    Usage,
)
from switchboard.session_config import ServerVad, SessionConfig
from switchboard.twilio_events import (
    AudioReceived,
    DtmfReceived,
    MarkPlayed,
    MediaFormat,
    PlaybackAcknowledged,
    StreamConnected,
    StreamStarted,
    StreamStopped,
    TwilioMessageRejected,
)


class FakePlayback:
    """Stands in for the Twilio core's acknowledged playback."""

    def __init__(self) -> None:
        self.played: dict[str, int] = {}
        self.asked: list[tuple[str, float | None]] = []

    def played_bytes(self, item_id: str, now: float | None = None) -> int:
        self.asked.append((item_id, now))
        return self.played.get(item_id, 0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


USAGE = Usage(total_tokens=30, input_tokens=10, output_tokens=20)
START = StreamStarted(
    1, "MZ1", "AC1", "CA1", ("inbound",), MediaFormat("audio/x-mulaw", 8000, 1), {}
)
UPDATED = SessionUpdated("audio/pcmu", "audio/pcmu", "marin")


def make(
    *, interrupt_response: bool = True, **overrides: object
) -> tuple[CallPolicy, FakePlayback]:
    session = SessionConfig(
        instructions="Book a cleaning.",
        turn_detection=ServerVad(interrupt_response=interrupt_response),
    )
    config = PolicyConfig(session=session, **overrides)  # type: ignore[arg-type]
    playback = FakePlayback()
    return CallPolicy(config, playback), playback


def feed(policy: CallPolicy, events: list[PolicyEvent], now: float = 1.0) -> list[Action]:
    out: list[Action] = []
    for event in events:
        out += policy.handle(event, now)
    return out


def kinds(actions: list[Action]) -> list[type]:
    return [type(a) for a in actions if not isinstance(a, PhaseChanged)]


# -- building each phase -----------------------------------------------------


def awaiting(**kw: object) -> CallPolicy:
    policy, _ = make(**kw)  # type: ignore[arg-type]
    policy.begin(0.0)
    return policy


def thinking(**kw: object) -> CallPolicy:
    policy = awaiting(**kw)
    feed(policy, [SessionCreated("sess_1", "gpt-realtime", None), UPDATED, START])
    return policy  # the greeting was requested


def idle(**kw: object) -> CallPolicy:
    policy = thinking(**kw)
    feed(
        policy,
        [
            ResponseStarted("resp_1"),
            OutputItemAdded("resp_1", "item_hi", "message"),
            AudioDelta("resp_1", "item_hi", b64(b"\x01" * 800)),
            AudioDone("resp_1", "item_hi"),
            TranscriptDone("resp_1", "item_hi", "Hello."),
            ResponseDone("resp_1", "completed", None, None),
            PlaybackAcknowledged("item_hi", 800, buffer_empty=True),
        ],
    )
    return policy  # the greeting was heard


def speaking(**kw: object) -> CallPolicy:
    policy = thinking(**kw)
    feed(
        policy,
        [
            ResponseStarted("resp_1"),
            OutputItemAdded("resp_1", "item_A", "message"),
            AudioDelta("resp_1", "item_A", b64(b"\x01" * 800)),
        ],
    )
    return policy


def tool_wait(**kw: object) -> CallPolicy:
    policy = idle(**kw)
    feed(
        policy,
        [
            ResponseStarted("resp_2"),
            FunctionCallRequested("resp_2", "item_F", "call_1", "lookup", "{}"),
            ResponseDone("resp_2", "completed", None, None),
        ],
    )
    return policy


def ended(**kw: object) -> CallPolicy:
    policy = idle(**kw)
    feed(policy, [HangupRequested("test")])
    return policy


BUILDERS: dict[CallPhase, Callable[[], CallPolicy]] = {
    CallPhase.AWAITING_ANSWER: awaiting,
    CallPhase.THINKING: thinking,
    CallPhase.IDLE: idle,
    CallPhase.SPEAKING: speaking,
    CallPhase.TOOL_WAIT: tool_wait,
    CallPhase.ENDED: ended,
}


def test_builders_reach_their_phase() -> None:
    for phase, build in BUILDERS.items():
        assert build().phase is phase
    assert set(BUILDERS) == set(CallPhase)


# -- the phase x event table -------------------------------------------------

SAMPLES: dict[str, PolicyEvent] = {
    "connected": StreamConnected("Call", "1.0.0"),
    "start": START,
    "media": AudioReceived(2, "MZ1", "inbound", 1, 0, b64(b"\xff" * 160)),
    "dtmf": DtmfReceived(3, "MZ1", "inbound_track", "5"),
    "mark": MarkPlayed(4, "MZ1", "sb:1"),
    "played": PlaybackAcknowledged("item_A", 160, buffer_empty=True),
    "stop": StreamStopped(5, "MZ1", "AC1", "CA1"),
    "twilio_rejected": TwilioMessageRejected(TwilioProtocolError("invalid_json", "bad JSON")),
    "session_created": SessionCreated("sess_2", "gpt-realtime", None),
    "session_updated": UPDATED,
    "speech_started": SpeechStarted("item_U", 100),
    "speech_stopped": SpeechStopped("item_U", 900),
    "committed": InputCommitted("item_U", None),
    "input_delta": InputTranscriptDelta("item_U", "hel"),
    "input_done": InputTranscriptCompleted("item_U", "hello"),
    "input_failed": InputTranscriptFailed("item_U", "no speech"),
    "response_started": ResponseStarted("resp_9"),
    "item_added": OutputItemAdded("resp_9", "item_B", "message"),
    "audio_delta": AudioDelta("resp_9", "item_B", b64(b"\x02" * 320)),
    "audio_done": AudioDone("resp_9", "item_B"),
    "transcript_delta": TranscriptDelta("resp_9", "item_B", "Hi"),
    "transcript_done": TranscriptDone("resp_9", "item_B", "Hi there"),
    "function_call": FunctionCallRequested("resp_9", "item_G", "call_9", "lookup", "{}"),
    "response_done": ResponseDone("resp_9", "completed", None, USAGE),
    "truncated": ItemTruncated("item_A", 50),
    "realtime_error": RealtimeErrorReported(
        "invalid_request_error", "response_cancel_not_active", "no active response"
    ),
    "realtime_ignored": RealtimeEventIgnored("rate_limits.updated"),
    "realtime_rejected": RealtimeMessageRejected(RealtimeProtocolError("invalid_json", "bad")),
    "tool_finished": ToolFinished("call_1", '{"ok": true}'),
    "hangup": HangupRequested("api"),
    "call_ended": CallEnded("busy"),
    "realtime_closed": RealtimeClosed(1006, "gone"),
    "twilio_closed": TwilioClosed(1000, "normal"),
}

P = CallPhase
LIVE = (P.IDLE, P.THINKING, P.SPEAKING, P.TOOL_WAIT)
ALL = (P.AWAITING_ANSWER, *LIVE)

RENEWAL = [RenewSession, ConfigureSession, SeedConversation]

# event -> (phases where the expected actions apply, expected action types);
# every (phase, event) pair not listed expects no action at all.
EXPECTED: dict[str, list[tuple[tuple[CallPhase, ...], list[type]]]] = {
    "start": [((*LIVE, P.ENDED), [ProblemNoted])],
    # levels are read per 100 ms of caller audio, not per frame: see the test below
    "media": [((P.AWAITING_ANSWER, *LIVE), [ForwardCallerAudio])],
    # a reply the call's end cuts short is recorded as cut (what was played of it)
    "stop": [((P.SPEAKING,), [AgentTurnInterrupted, FinishCall]), (ALL, [FinishCall])],
    "twilio_rejected": [((*ALL, P.ENDED), [ProblemNoted])],
    "speech_started": [
        ((P.SPEAKING,), [CallerTurnStarted, ClearPlayback, TruncateItem, AgentTurnInterrupted]),
        ((P.AWAITING_ANSWER, P.IDLE, P.THINKING, P.TOOL_WAIT), [CallerTurnStarted]),
    ],
    "input_done": [((*ALL, P.ENDED), [CallerTurnTranscribed])],
    "input_failed": [((*ALL, P.ENDED), [ProblemNoted])],
    "item_added": [((*ALL, P.ENDED), [AgentTurnStarted])],
    "audio_delta": [
        ((P.AWAITING_ANSWER,), [ProblemNoted]),
        ((P.SPEAKING,), [PlayAgentAudio]),
        ((P.THINKING,), [PlayAgentAudio, LatencyMeasured]),  # the first audio of the call
        ((P.IDLE, P.TOOL_WAIT), [PlayAgentAudio]),
    ],
    "transcript_delta": [((*ALL, P.ENDED), [AgentTranscriptGrew])],
    "transcript_done": [((*ALL, P.ENDED), [AgentTurnFinished])],
    "function_call": [(ALL, [RunTool])],
    "response_done": [((*ALL, P.ENDED), [UsageReported])],
    "realtime_error": [((*ALL, P.ENDED), [ProblemNoted])],
    "realtime_rejected": [((*ALL, P.ENDED), [ProblemNoted])],
    "tool_finished": [((P.TOOL_WAIT,), [SendFunctionOutput, ToolReturned, CreateResponse])],
    "hangup": [
        ((P.SPEAKING,), [HangUp, AgentTurnInterrupted, FinishCall]),
        (ALL, [HangUp, FinishCall]),
    ],
    "call_ended": [((P.SPEAKING,), [AgentTurnInterrupted, FinishCall]), (ALL, [FinishCall])],
    # a lost Realtime socket is replaced; a reply it was busy with is asked for again,
    # but a greeting none of which was sent is asked for afresh once the session is ready
    "realtime_closed": [
        ((P.AWAITING_ANSWER, P.THINKING), [ProblemNoted, RenewSession, ConfigureSession]),
        ((P.IDLE,), [ProblemNoted, *RENEWAL]),
        ((P.SPEAKING, P.TOOL_WAIT), [ProblemNoted, *RENEWAL, CreateResponse]),
    ],
    "twilio_closed": [((P.SPEAKING,), [AgentTurnInterrupted, FinishCall]), (ALL, [FinishCall])],
}


def expected_for(phase: CallPhase, name: str) -> list[type]:
    for phases, actions in EXPECTED.get(name, []):
        if phase in phases:
            return actions
    return []


def test_samples_cover_every_handled_event_type() -> None:
    assert {type(e) for e in SAMPLES.values()} == set(HANDLERS) | {AudioReceived}
    assert set(EXPECTED) <= set(SAMPLES)


@pytest.mark.parametrize("phase", list(CallPhase), ids=lambda p: p.value)
@pytest.mark.parametrize("name", list(SAMPLES))
def test_phase_event_table(phase: CallPhase, name: str) -> None:
    policy = BUILDERS[phase]()
    actions = policy.handle(SAMPLES[name], 5.0)
    assert kinds(actions) == expected_for(phase, name)
    changes = [a for a in actions if isinstance(a, PhaseChanged)]
    assert len(changes) <= 1
    if changes:
        assert changes[0] == PhaseChanged(phase.value, policy.phase.value)
    else:
        assert policy.phase is phase


# -- greeting ----------------------------------------------------------------


@pytest.mark.parametrize("order", [(UPDATED, START), (START, UPDATED)])
def test_greeting_waits_for_start_and_configured_session(
    order: tuple[PolicyEvent, PolicyEvent],
) -> None:
    policy = awaiting()
    assert kinds(policy.handle(order[0], 1.0)) == []
    actions = policy.handle(order[1], 1.5)
    assert kinds(actions) == [CreateResponse]
    assert policy.phase is CallPhase.THINKING
    # neither repeats the greeting
    assert kinds(feed(policy, [UPDATED])) == []


def test_greeting_text_goes_into_the_instructions() -> None:
    policy = awaiting(greeting="Hi, this is Ava from Bright Smiles.")
    actions = feed(policy, [UPDATED, START])
    (create,) = [a for a in actions if isinstance(a, CreateResponse)]
    assert create.instructions is not None
    assert "Hi, this is Ava from Bright Smiles." in create.instructions


@pytest.mark.parametrize("greeting", [None, "Hi, this is Ava from Bright Smiles."])
def test_the_greeting_keeps_the_calls_own_instructions(greeting: str | None) -> None:
    """A response's instructions replace the session's for that response: without the
    call's own, the greeting would not know whom it calls for or why."""
    policy = awaiting(greeting=greeting)
    (create,) = [a for a in feed(policy, [UPDATED, START]) if isinstance(a, CreateResponse)]
    assert create.instructions is not None
    assert create.instructions.startswith("Book a cleaning.\n\n")


def test_begin_configures_the_session_and_opens_the_audio_path() -> None:
    policy, _ = make()
    media = SAMPLES["media"]
    assert policy.handle(media, 0.0) == []  # nothing flows before the session exists
    (configure,) = policy.begin(0.0)
    assert isinstance(configure, ConfigureSession)
    assert configure.config.instructions == "Book a cleaning."
    assert policy.handle(media, 0.1) == [ForwardCallerAudio(media.payload)]  # type: ignore[union-attr]


# -- model audio to Twilio ---------------------------------------------------


def test_model_audio_goes_out_in_20ms_frames_and_the_tail_is_padded() -> None:
    policy = thinking()
    feed(policy, [ResponseStarted("r"), OutputItemAdded("r", "item_A", "message")])
    first = policy.handle(AudioDelta("r", "item_A", b64(b"\x01" * 250)), 2.0)
    (play,) = [a for a in first if isinstance(a, PlayAgentAudio)]
    assert play.item_id == "item_A"
    assert play.frames == (b"\x01" * FRAME_BYTES,)
    second = policy.handle(AudioDelta("r", "item_A", b64(b"\x02" * 100)), 2.1)
    (play,) = [a for a in second if isinstance(a, PlayAgentAudio)]
    assert play.frames == (b"\x01" * 90 + b"\x02" * 70,)
    (done,) = policy.handle(AudioDone("r", "item_A"), 2.2)
    assert isinstance(done, PlayAgentAudio)
    assert done.frames == (b"\x02" * 30 + bytes([MULAW_SILENCE]) * 130,)
    assert policy.phase is CallPhase.SPEAKING


def test_playback_done_returns_to_idle_and_starts_the_silence_clock() -> None:
    policy = speaking()
    feed(policy, [ResponseDone("resp_1", "completed", None, None)])
    assert policy.phase is CallPhase.SPEAKING  # still playing at Twilio
    actions = policy.handle(PlaybackAcknowledged("item_A", 800, buffer_empty=True), 9.0)
    assert PhaseChanged("speaking", "idle") in actions
    assert policy.next_deadline == pytest.approx(9.0 + policy.config.caller_silence_s)


def test_invalid_base64_in_a_delta_is_a_peer_error() -> None:
    policy = thinking()
    actions = policy.handle(AudioDelta("r", "item_A", "%%%"), 1.0)
    assert kinds(actions) == [ProblemNoted]
    assert policy.phase is CallPhase.THINKING


# -- barge-in and its failure modes (protocols.md section 6) -----------------


def test_barge_in_truncates_at_the_acknowledged_playback_offset() -> None:
    policy = thinking()
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    feed(policy, [ResponseStarted("r"), OutputItemAdded("r", "item_A", "message")])
    feed(policy, [AudioDelta("r", "item_A", b64(b"\x01" * 8000))])  # 1000 ms generated
    playback.played["item_A"] = 3 * FRAME_BYTES  # Twilio echoed marks for 60 ms
    actions = policy.handle(SpeechStarted("item_U", 500), 7.0)
    assert kinds(actions) == [
        CallerTurnStarted,
        ClearPlayback,
        TruncateItem,
        AgentTurnInterrupted,
    ]
    assert TruncateItem("item_A", 60) in actions
    assert AgentTurnInterrupted("item_A", 60, 1000) in actions
    assert playback.asked == [("item_A", 7.0)]
    assert policy.phase is CallPhase.THINKING  # the response is still active


@pytest.mark.parametrize(
    "ending", [StreamStopped(5, "MZ1", "AC1", "CA1"), HangupRequested("api")], ids=type
)
@pytest.mark.parametrize(("played_ms", "cut"), [(100, True), (990, False)])
def test_a_reply_generated_in_full_but_still_playing_at_the_end_is_cut_where_heard(
    ending: PolicyEvent, played_ms: int, cut: bool
) -> None:
    # Generation runs ahead of playback (protocols.md 3): the reply's transcript is done,
    # and the call ends while the phone plays it. What was heard is what stands.
    policy = thinking()
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    feed(policy, [ResponseStarted("r"), OutputItemAdded("r", "item_A", "message")])
    feed(policy, [AudioDelta("r", "item_A", b64(b"\x01" * 8000))])  # 1000 ms generated
    done = feed(policy, [AudioDone("r", "item_A"), TranscriptDone("r", "item_A", "Hello.")])
    assert AgentTurnFinished("item_A", "Hello.") in done
    assert policy.phase is CallPhase.SPEAKING  # still playing
    playback.played["item_A"] = played_ms * 8  # bytes of mu-law
    actions = policy.handle(ending, 2.0)
    cuts = [a for a in actions if isinstance(a, AgentTurnInterrupted)]
    # Played out but for less than a frame, it was heard whole: no cut.
    assert cuts == ([AgentTurnInterrupted("item_A", played_ms, 1000, by="end")] if cut else [])
    assert FinishCall in kinds(actions)


def test_truncate_past_the_audio_is_clamped_to_what_was_generated() -> None:
    policy = speaking()  # 800 bytes = 100 ms generated
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    playback.played["item_A"] = 10_000  # a clock running ahead of the audio
    actions = policy.handle(SpeechStarted("item_U", 500), 7.0)
    assert TruncateItem("item_A", 100) in actions


def test_cancel_only_if_active_and_the_server_does_not_cancel_itself() -> None:
    server_cancels = speaking(interrupt_response=True)
    assert CancelResponse() not in server_cancels.handle(SpeechStarted("u", 1), 2.0)
    we_cancel = speaking(interrupt_response=False)
    assert CancelResponse() in we_cancel.handle(SpeechStarted("u", 1), 2.0)
    done = speaking(interrupt_response=False)
    feed(done, [ResponseDone("resp_1", "completed", None, None)])
    actions = done.handle(SpeechStarted("u", 1), 2.0)
    assert CancelResponse() not in actions  # generation finished, audio still playing
    assert ClearPlayback() in actions
    thinking_only = thinking(interrupt_response=False)
    feed(thinking_only, [ResponseStarted("r")])
    assert kinds(thinking_only.handle(SpeechStarted("u", 1), 2.0)) == [
        CallerTurnStarted,
        CancelResponse,
    ]


def test_audio_of_a_response_we_cancelled_before_a_sound_is_never_played() -> None:
    # interrupt_response off: the caller spoke before the reply's first audio; until the
    # server acts on our cancel, what it still generates must not play over the caller.
    policy = thinking(interrupt_response=False)
    feed(policy, [ResponseStarted("r"), OutputItemAdded("r", "item_L", "message")])
    assert CancelResponse() in policy.handle(SpeechStarted("u", 1), 2.0)
    late = policy.handle(AudioDelta("r", "item_L", b64(b"\x01" * 800)), 2.05)
    assert late == [TruncateItem("item_L", 0), AgentTurnInterrupted("item_L", 0, 100)]
    assert policy.handle(AudioDelta("r", "item_L", b64(b"\x01" * 800)), 2.06) == []
    assert policy.handle(TranscriptDone("r", "item_L", "Never heard"), 2.07) == []
    # An item of it with no audio yet: unheard too, not a finished turn.
    feed(policy, [OutputItemAdded("r", "item_M", "message")])
    assert policy.handle(TranscriptDone("r", "item_M", "Nor this"), 2.08) == [
        AgentTurnInterrupted("item_M", 0, 0)
    ]
    # Once it is done, the next reply plays.
    feed(policy, [ResponseDone("r", "cancelled", "client_cancelled", None)])
    feed(policy, [ResponseStarted("r2"), OutputItemAdded("r2", "item_N", "message")])
    reply = policy.handle(AudioDelta("r2", "item_N", b64(b"\x02" * 160)), 3.0)
    assert PlayAgentAudio in kinds(reply)


def played_out_then_cancelled() -> tuple[CallPolicy, FakePlayback]:
    """interrupt_response off; item_A (100 ms) all played and acknowledged while its
    response still generates; the caller speaks, so we cancel it."""
    policy = speaking(interrupt_response=False)
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    playback.played["item_A"] = 800
    feed(policy, [PlaybackAcknowledged("item_A", 800, buffer_empty=True)])
    assert kinds(policy.handle(SpeechStarted("u", 1), 2.0)) == [CallerTurnStarted, CancelResponse]
    return policy, playback


def test_a_cancelled_reply_already_played_out_keeps_what_was_heard() -> None:
    # Nothing of it went unheard: no truncate (it would delete the heard transcript).
    policy, playback = played_out_then_cancelled()
    assert policy.handle(TranscriptDone("resp_1", "item_A", "Hello there"), 2.1) == [
        AgentTurnInterrupted("item_A", 100, 100)
    ]
    assert playback.asked[-1] == ("item_A", 2.1)
    assert policy.handle(AudioDelta("resp_1", "item_A", b64(b"\x01" * 800)), 2.2) == []


def test_late_audio_of_a_cancelled_reply_played_out_truncates_at_what_was_heard() -> None:
    policy, _ = played_out_then_cancelled()
    late = policy.handle(AudioDelta("resp_1", "item_A", b64(b"\x01" * 400)), 2.1)
    assert late == [TruncateItem("item_A", 100), AgentTurnInterrupted("item_A", 100, 150)]
    assert policy.handle(TranscriptDone("resp_1", "item_A", "Hello there, and"), 2.2) == []


def test_the_held_tail_of_a_cancelled_reply_is_not_played_at_its_audio_done() -> None:
    policy = thinking(interrupt_response=False)
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    feed(policy, [ResponseStarted("r"), OutputItemAdded("r", "item_A", "message")])
    feed(policy, [AudioDelta("r", "item_A", b64(b"\x01" * 840))])  # 5 frames + a 5 ms tail
    playback.played["item_A"] = 800
    feed(policy, [PlaybackAcknowledged("item_A", 800, buffer_empty=True)])
    assert CancelResponse() in policy.handle(SpeechStarted("u", 1), 2.0)
    done = policy.handle(AudioDone("r", "item_A"), 2.1)
    # Not truncated for 5 ms: that would delete the model's transcript of what was heard.
    assert done == [AgentTurnInterrupted("item_A", 100, 105)]


def test_a_reply_cut_short_by_the_callers_hang_up_keeps_what_was_played() -> None:
    policy = speaking()  # item_A: 40 ms generated, playing
    heard = policy.handle(StreamStopped(9, "MZ1", "AC1", "CA1"), 5.0)
    [cut] = [a for a in heard if isinstance(a, AgentTurnInterrupted)]
    assert cut.item_id == "item_A" and 0 <= cut.heard_ms <= cut.generated_ms
    assert kinds(heard)[-1] is FinishCall
    # Its transcript, arriving late, does not undo the cut.
    assert policy.handle(TranscriptDone("resp_1", "item_A", "Full text"), 5.1) == []


@pytest.mark.parametrize(
    "ending",
    [StreamStopped(9, "MZ1", "AC1", "CA1"), HangupRequested("api")],
    ids=["stop", "hangup"],
)
def test_a_reply_cut_by_a_barge_in_is_not_cut_again_at_the_end(ending: PolicyEvent) -> None:
    policy = speaking()  # item_A: 100 ms generated, nothing acknowledged
    barge_in = policy.handle(SpeechStarted("item_U", 10), 2.0)
    end = policy.handle(ending, 2.5)
    assert FinishCall in kinds(end)
    cuts = [a for a in [*barge_in, *end] if isinstance(a, AgentTurnInterrupted)]
    assert cuts == [AgentTurnInterrupted("item_A", 0, 100)]  # once, by the caller


def test_transcript_deltas_say_where_they_start_in_their_item() -> None:
    policy = speaking()
    grown = [
        policy.handle(TranscriptDelta("resp_1", item, text), 2.0)[0]
        for item, text in (("item_A", "Hello "), ("item_A", "there."), ("item_B", "Hi"))
    ]
    assert [(g.item_id, g.offset) for g in grown] == [("item_A", 0), ("item_A", 6), ("item_B", 0)]  # type: ignore[attr-defined]


def test_clear_is_not_sent_with_nothing_buffered() -> None:
    for build in (idle, thinking, tool_wait, awaiting):
        actions = build().handle(SpeechStarted("u", 1), 2.0)
        assert ClearPlayback() not in actions
        assert not any(isinstance(a, TruncateItem) for a in actions)


def test_late_deltas_and_transcript_of_a_cut_item_are_dropped() -> None:
    policy = speaking()
    feed(policy, [SpeechStarted("u", 1)])
    assert policy.handle(AudioDelta("resp_1", "item_A", b64(b"\x01" * 800)), 2.0) == []
    assert policy.handle(AudioDone("resp_1", "item_A"), 2.1) == []
    assert policy.handle(TranscriptDone("resp_1", "item_A", "Full text"), 2.2) == []


def test_marks_flushed_by_the_clear_do_not_change_anything() -> None:
    policy = speaking()
    feed(policy, [SpeechStarted("u", 1)])
    before = policy.phase
    assert kinds(feed(policy, [MarkPlayed(9, "MZ1", "sb:3", flushed=True)])) == []
    assert policy.phase is before


def test_second_interruption_before_the_first_settles() -> None:
    policy = speaking(interrupt_response=False)
    first = policy.handle(SpeechStarted("u1", 1), 2.0)
    assert kinds(first) == [
        CallerTurnStarted,
        ClearPlayback,
        TruncateItem,
        AgentTurnInterrupted,
        CancelResponse,
    ]
    # the cancel has not been confirmed yet, more audio of the cut item arrives
    assert policy.handle(AudioDelta("resp_1", "item_A", b64(b"\x01" * 320)), 2.05) == []
    second = policy.handle(SpeechStarted("u2", 2), 2.1)
    assert ClearPlayback() not in second
    assert not any(isinstance(a, TruncateItem) for a in second)
    # a new reply after the turn is played normally
    feed(policy, [ResponseDone("resp_1", "cancelled", "turn_detected", None)])
    feed(policy, [ResponseStarted("resp_3"), OutputItemAdded("resp_3", "item_C", "message")])
    actions = policy.handle(AudioDelta("resp_3", "item_C", b64(b"\x03" * 160)), 3.0)
    assert kinds(actions) == [PlayAgentAudio]


def test_interruption_during_a_function_call() -> None:
    policy = idle()
    feed(policy, [ResponseStarted("r2")])
    run = policy.handle(FunctionCallRequested("r2", "item_F", "call_7", "lookup", '{"a":'), 2.0)
    assert kinds(run) == [RunTool]
    # the caller speaks while the tool runs; the server starts a new response
    assert kinds(policy.handle(SpeechStarted("u", 1), 2.1)) == [CallerTurnStarted]
    feed(policy, [ResponseDone("r2", "completed", None, None), ResponseStarted("r3")])
    # the tool's output goes in at once, the follow-up response waits for r3
    finished = policy.handle(ToolFinished("call_7", '{"slots": []}'), 2.5)
    assert kinds(finished) == [SendFunctionOutput, ToolReturned]
    assert kinds(policy.handle(ResponseDone("r3", "completed", None, None), 3.0)) == [
        CreateResponse
    ]


def test_a_response_request_refused_for_an_active_one_is_made_again_after_it() -> None:
    policy = idle()
    feed(
        policy,
        [
            ResponseStarted("r1"),
            FunctionCallRequested("r1", "f1", "call_1", "lookup", "{}"),
            ResponseDone("r1", "completed", None, None),
        ],
    )
    assert kinds(policy.handle(ToolFinished("call_1", "{}"), 2.0))[-1] is CreateResponse
    # The server's VAD started a response first, without the tool's output: ours is refused.
    feed(policy, [ResponseStarted("r_auto")])
    refused = RealtimeErrorReported(
        "invalid_request_error", "conversation_already_has_active_response", "active: r_auto"
    )
    assert kinds(policy.handle(refused, 2.1)) == [ProblemNoted]
    assert kinds(policy.handle(ResponseDone("r_auto", "completed", None, None), 3.0)) == [
        CreateResponse
    ]


def test_parallel_tool_calls_answer_once_all_outputs_are_in() -> None:
    policy = idle()
    feed(
        policy,
        [
            ResponseStarted("r"),
            FunctionCallRequested("r", "f1", "call_a", "one", "{}"),
            FunctionCallRequested("r", "f2", "call_b", "two", "{}"),
            ResponseDone("r", "completed", None, None),
        ],
    )
    assert kinds(policy.handle(ToolFinished("call_a", "1"), 2.0)) == [
        SendFunctionOutput,
        ToolReturned,
    ]
    assert policy.phase is CallPhase.TOOL_WAIT
    assert kinds(policy.handle(ToolFinished("call_b", "2"), 2.1)) == [
        SendFunctionOutput,
        ToolReturned,
        CreateResponse,
    ]
    assert kinds(policy.handle(ToolFinished("call_b", "again"), 2.2)) == []  # unknown now


# -- DTMF ----------------------------------------------------------------------


def test_dtmf_digits_are_collected_then_passed_to_the_model() -> None:
    policy = idle()
    assert feed(policy, [DtmfReceived(5, "MZ1", "inbound_track", "1")], now=10.0) == []
    assert feed(policy, [DtmfReceived(6, "MZ1", "inbound_track", "2")], now=10.5) == []
    assert policy.next_deadline == pytest.approx(10.5 + policy.config.dtmf_collect_s)
    assert policy.tick(11.0) == []
    actions = policy.tick(12.0)
    assert AddUserText("[The caller pressed these keys on the phone: 12]") in actions
    assert kinds(actions) == [AddUserText, CreateResponse]


def test_hash_ends_dtmf_entry_at_once_and_waits_for_a_busy_model() -> None:
    policy = speaking()
    feed(policy, [DtmfReceived(5, "MZ1", "inbound_track", "4")])
    actions = feed(policy, [DtmfReceived(6, "MZ1", "inbound_track", "#")])
    assert kinds(actions) == [AddUserText]  # the response waits for the active one
    assert kinds(feed(policy, [ResponseDone("resp_1", "completed", None, None)])) == [
        CreateResponse
    ]


def test_a_long_run_of_keys_is_passed_on_without_waiting_for_a_pause() -> None:
    # Keys that never pause would otherwise pile up without end.
    policy = idle()
    keys = [DtmfReceived(5 + n, "MZ1", "inbound_track", "7") for n in range(MAX_DTMF_DIGITS)]
    actions = feed(policy, keys, now=10.0)
    pressed = "7" * MAX_DTMF_DIGITS
    assert AddUserText(f"[The caller pressed these keys on the phone: {pressed}]") in actions


# -- deadlines -----------------------------------------------------------------


def test_maximum_call_length_hangs_up() -> None:
    policy = idle(max_call_s=60.0, caller_silence_s=1000.0)
    feed(policy, [SpeechStarted("u", 1)], now=50.0)
    assert policy.next_deadline == pytest.approx(1.0 + 60.0)  # answered at 1.0
    assert policy.tick(60.9) == []
    assert policy.tick(61.0) == [
        HangUp("max_duration"),
        FinishCall("max_duration"),
        PhaseChanged("idle", "ended"),
    ]
    assert policy.next_deadline is None
    assert policy.tick(62.0) == []


def test_caller_silence_nudges_once_then_hangs_up() -> None:
    policy = idle(caller_silence_s=10.0)
    feed(policy, [SpeechStopped("u", 10)], now=20.0)
    assert policy.next_deadline == pytest.approx(30.0)
    nudge = policy.tick(30.0)
    assert kinds(nudge) == [CreateResponse]
    feed(
        policy,
        [ResponseStarted("r"), ResponseDone("r", "completed", None, None)],
        now=31.0,
    )
    assert policy.phase is CallPhase.IDLE
    assert policy.tick(40.9) == []
    assert kinds(policy.tick(41.0)) == [HangUp, FinishCall]
    assert policy.phase is CallPhase.ENDED


def test_caller_activity_resets_the_silence_clock_and_the_nudge() -> None:
    policy = idle(caller_silence_s=10.0)  # idle since t=1
    assert policy.next_deadline == pytest.approx(11.0)
    nudge = policy.tick(11.0)
    assert kinds(nudge) == [CreateResponse]
    [ask] = [a for a in nudge if isinstance(a, CreateResponse)]
    assert ask.instructions is not None and "still there" in ask.instructions
    feed(policy, [ResponseStarted("r"), ResponseDone("r", "completed", None, None)], now=12.0)
    assert policy.phase is CallPhase.IDLE
    feed(policy, [SpeechStarted("u", 1)], now=15.0)  # the caller answers the nudge
    assert policy.tick(24.9) == []  # the clock runs from the caller's turn, not the nudge
    assert kinds(policy.tick(25.0)) == [CreateResponse]  # a fresh nudge, not a hang-up


def test_no_silence_deadline_while_the_agent_speaks() -> None:
    policy = speaking(caller_silence_s=1.0, max_call_s=100.0)
    assert policy.next_deadline is not None
    assert policy.next_deadline > 50
    assert policy.tick(50.0) == []


def renewal_due(**kw: object) -> tuple[CallPolicy, float]:
    """An idle call whose session was created at t=100; returns it and the renewal time."""
    policy = idle(caller_silence_s=10_000.0, max_call_s=10_000.0, **kw)
    feed(policy, [SessionCreated("sess_9", "gpt-realtime", None)], now=100.0)
    return policy, 100.0 + 3600.0 - policy.config.session_renew_margin_s


def renewal(actions: list[Action]) -> list[Action]:
    """The renewal commands in a batch: RenewSession and everything after it."""
    at = next((i for i, a in enumerate(actions) if isinstance(a, RenewSession)), len(actions))
    return actions[at:]


def test_an_idle_call_moves_to_a_new_session_before_the_cap() -> None:
    policy, due = renewal_due()
    assert policy.next_deadline == pytest.approx(due)
    assert policy.tick(due - 1) == []
    actions = policy.tick(due)
    assert kinds(actions) == [RenewSession, ConfigureSession, SeedConversation]
    assert actions[1] == ConfigureSession(policy.config.session)
    seed = actions[2]
    assert isinstance(seed, SeedConversation)
    assert seed.note == RENEWED_NOTE
    # The new session's `session.created` sets the next renewal from its own start.
    feed(policy, [SessionCreated("sess_10", "gpt-realtime", None), UPDATED], now=due + 0.5)
    assert policy.next_deadline == pytest.approx(due + 0.5 + 3540.0)
    assert policy.tick(due + 1) == []  # no second renewal of the same session
    assert kinds(feed(policy, [SAMPLES["media"]])) == [ForwardCallerAudio]  # audio flows on


def test_renewal_waits_until_the_reply_has_played_and_carries_the_conversation() -> None:
    policy, due = renewal_due()
    feed(policy, [SpeechStarted("item_U", 100)], now=200.0)
    assert renewal(policy.tick(due)) == []  # the caller is speaking
    feed(policy, [SpeechStopped("item_U", 900)], now=due + 1)
    assert policy.phase is CallPhase.IDLE
    assert renewal(feed(policy, [InputCommitted("item_U", None)], now=due + 1)) == []
    # Answered but not yet transcribed: the new session must be told what was said.
    feed(policy, [ResponseStarted("resp_3"), OutputItemAdded("resp_3", "item_B", "message")])
    feed(policy, [AudioDelta("resp_3", "item_B", b64(b"\x01" * 800))], now=due + 2)
    feed(policy, [TranscriptDone("resp_3", "item_B", "It is nine o'clock.")], now=due + 2)
    feed(policy, [ResponseDone("resp_3", "completed", None, None), AudioDone("resp_3", "item_B")])
    assert policy.phase is CallPhase.SPEAKING
    played = PlaybackAcknowledged("item_B", 800, buffer_empty=True)
    assert renewal(policy.handle(played, due + 3)) == []  # idle, transcript outstanding
    actions = policy.handle(InputTranscriptCompleted("item_U", "What time is it?"), due + 4)
    assert kinds(renewal(actions)) == [RenewSession, ConfigureSession, SeedConversation]
    seed = renewal(actions)[2]
    assert isinstance(seed, SeedConversation)
    assert seed.turns == (
        ("assistant", "Hello."),
        ("user", "What time is it?"),
        ("assistant", "It is nine o'clock."),
    )


def test_without_transcription_renewal_waits_only_for_the_reply() -> None:
    # No transcript comes when transcription is off: a caller's turn answered is settled.
    session = SessionConfig(instructions="Book a cleaning.", transcription_model=None)
    config = PolicyConfig(session=session, caller_silence_s=10_000.0, max_call_s=10_000.0)
    policy = CallPolicy(config, FakePlayback())
    policy.begin(0.0)
    feed(policy, [SessionCreated("sess_1", "gpt-realtime", None), UPDATED, START], now=1.0)
    feed(policy, reply("r1", "item_hi", "Hello."), now=1.0)
    feed(policy, [PlaybackAcknowledged("item_hi", 8000, buffer_empty=True)], now=2.0)
    due = 1.0 + 3600.0 - config.session_renew_margin_s
    feed(policy, [SpeechStarted("item_U", 100)], now=due - 5)
    assert renewal(policy.tick(due)) == []  # the caller is speaking
    feed(policy, [SpeechStopped("item_U", 900)], now=due + 1)
    assert renewal(feed(policy, reply("r2", "item_B", "Nine o'clock."), now=due + 2)) == []
    played = policy.handle(PlaybackAcknowledged("item_B", 8000, buffer_empty=True), due + 3)
    assert kinds(renewal(played)) == RENEWAL  # at the first quiet moment


def test_an_expired_session_is_replaced_at_once_and_the_cut_reply_asked_again() -> None:
    policy = speaking()
    error = RealtimeErrorReported("invalid_request_error", "session_expired", "expired")
    actions = policy.handle(error, 2.0)
    assert kinds(actions) == [
        ProblemNoted,
        RenewSession,
        ConfigureSession,
        SeedConversation,
        CreateResponse,
    ]
    assert not any(isinstance(a, HangUp | FinishCall) for a in actions)
    # A barge-in on the old reply still playing clears the phone but truncates nothing:
    # its item is not in the new session.
    cut = policy.handle(SpeechStarted("item_V", 10), 3.0)
    assert kinds(cut) == [CallerTurnStarted, ClearPlayback, AgentTurnInterrupted]


def test_the_history_keeps_what_the_caller_heard_within_a_budget() -> None:
    policy, due = renewal_due(history_chars=40)
    feed(policy, [OutputItemAdded("resp_1", "item_G", "message")])
    feed(policy, [TranscriptDone("resp_1", "item_G", "Hello, this is Ava from the clinic.")])
    feed(policy, [SpeechStarted("item_U", 1), SpeechStopped("item_U", 9)], now=110.0)
    feed(policy, [InputTranscriptCompleted("item_U", "Hi")], now=111.0)
    feed(policy, [ResponseStarted("resp_2"), OutputItemAdded("resp_2", "item_B", "message")])
    feed(policy, [TranscriptDelta("resp_2", "item_B", "We have Tuesday at four or Friday at ten.")])
    feed(policy, [AudioDelta("resp_2", "item_B", b64(b"\x01" * 8000))], now=112.0)
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    playback.played["item_B"] = 4000  # half of the reply was heard
    feed(policy, [SpeechStarted("item_W", 50)], now=113.0)  # barge-in
    feed(policy, [ResponseDone("resp_2", "cancelled", None, None)], now=113.0)
    feed(policy, [SpeechStopped("item_W", 90), ResponseStarted("resp_4")], now=114.0)
    feed(policy, [InputTranscriptCompleted("item_W", "Friday.")], now=114.0)
    feed(policy, [ResponseDone("resp_4", "completed", None, None)], now=115.0)
    seed = renewal(policy.tick(due))[2]
    assert isinstance(seed, SeedConversation)
    # The oldest turn does not fit in 40 characters; the cut reply keeps what was heard.
    assert seed.turns == (
        ("user", "Hi"),
        ("assistant", "We have Tuesday at"),
        ("user", "Friday."),
    )


def test_awaiting_answer_has_no_call_deadline() -> None:
    assert awaiting().next_deadline is None
    assert awaiting().tick(1e9) == []


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "noted"),
    [
        # The service's words for a wrong key quote its ends: not kept.
        ("invalid_api_key", "the OpenAI API key is invalid (check OPENAI_API_KEY)"),
        ("beta_api_shape_disabled", "Incorrect API key provided: sk-ab**9876."),
        ("insufficient_quota", "Incorrect API key provided: sk-ab**9876."),
    ],
)
def test_fatal_realtime_error_ends_the_call(code: str, noted: str) -> None:
    policy = idle()
    said = "Incorrect API key provided: sk-ab**9876."
    error = RealtimeErrorReported("invalid_request_error", code, said)
    actions = policy.handle(error, 2.0)
    assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]
    assert actions[0] == ProblemNoted("realtime", code, noted, fatal=True)
    assert HangUp(f"realtime_{code}") in actions
    assert policy.phase is CallPhase.ENDED


@pytest.mark.parametrize(
    ("close", "code"),
    [
        (RealtimeClosed(3000, "invalid_request_error.invalid_api_key"), "invalid_api_key"),
        (
            RealtimeClosed(4000, "invalid_request_error.beta_api_shape_disabled"),
            "beta_api_shape_disabled",
        ),
        (RealtimeClosed(3000, "insufficient_quota.insufficient_quota"), "insufficient_quota"),
    ],
)
def test_a_close_that_refuses_the_session_ends_the_call_with_no_reconnect(
    close: RealtimeClosed, code: str
) -> None:
    # A lost socket is replaced; one the service closed refusing the session is not: a
    # new session would be refused the same way.
    policy = idle()
    actions = policy.handle(close, 2.0)
    assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]
    problem = actions[0]
    assert isinstance(problem, ProblemNoted)
    assert (problem.source, problem.reason, problem.fatal) == ("realtime", code, True)
    assert refusal_cause(code) in problem.message
    assert HangUp(f"realtime_{code}") in actions
    assert policy.next_deadline is None  # no reconnect is due


def test_a_renewed_session_refused_for_its_key_is_not_tried_again() -> None:
    policy = idle()
    assert RenewSession in kinds(policy.handle(RealtimeClosed(1006, "reset"), 2.0))
    refused = RealtimeClosed(3000, "invalid_request_error.invalid_api_key")
    actions = policy.handle(refused, 2.1)  # the new session's connect was refused
    assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]
    assert "the OpenAI API key is invalid" in actions[0].message  # type: ignore[attr-defined]
    assert policy.tick(60.0) == []


@pytest.mark.parametrize(
    "close",
    [RealtimeClosed(1006, "invalid_request_error.invalid_api_key_x"), RealtimeClosed(1011, "a.b")],
)
def test_other_closes_still_reconnect(close: RealtimeClosed) -> None:
    assert RenewSession in kinds(idle().handle(close, 2.0))


def test_a_refused_session_configuration_ends_the_call() -> None:
    # Still ringing: the session would stay pcm16 at 24 kHz, noise on a mu-law phone line.
    policy = awaiting()
    error = RealtimeErrorReported(
        "invalid_request_error", "invalid_value", "no such voice", refused_update=True
    )
    actions = policy.handle(error, 1.0)
    assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]
    assert HangUp("realtime_session_refused") in actions
    assert "could not be configured: no such voice" in actions[0].message  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("input_format", "output_format"),
    [("audio/pcm", "audio/pcmu"), ("audio/pcmu", "audio/pcm"), ("audio/pcma", "audio/pcma")],
)
def test_a_session_that_keeps_another_audio_format_ends_the_call(
    input_format: str, output_format: str
) -> None:
    # `session.updated` carries the effective session (protocols.md 3.2): accepted, but
    # not as mu-law both ways, the call would be noise on the phone line.
    policy = awaiting()
    feed(policy, [SessionCreated("sess_1", "gpt-realtime", None), START])
    actions = policy.handle(SessionUpdated(input_format, output_format, "marin"), 1.5)
    assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]  # no greeting
    problem = actions[0]
    assert isinstance(problem, ProblemNoted) and problem.fatal
    assert (problem.source, problem.reason) == ("realtime", "audio_format_refused")
    assert f"{input_format} in and {output_format} out" in problem.message
    assert "not the audio/pcmu asked" in problem.message
    assert policy.phase is CallPhase.ENDED


def test_a_renewed_session_that_keeps_another_audio_format_ends_the_call() -> None:
    policy = idle()
    policy.handle(RealtimeClosed(1006, "reset"), 2.0)
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None)], now=2.5)
    actions = policy.handle(SessionUpdated("audio/pcmu", "audio/pcm", "marin"), 2.6)
    assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]
    assert policy.phase is CallPhase.ENDED


def test_the_audio_format_checked_is_the_one_configure_session_asks_for() -> None:
    (configure,) = make()[0].begin(0.0)
    assert isinstance(configure, ConfigureSession)
    audio = configure.config.to_session_payload()["audio"]
    wanted = {"type": PHONE_AUDIO_FORMAT}
    assert audio["input"]["format"] == audio["output"]["format"] == wanted  # type: ignore[index]
    assert (UPDATED.input_format, UPDATED.output_format) == (PHONE_AUDIO_FORMAT,) * 2


def test_a_refused_response_create_does_not_leave_the_call_thinking() -> None:
    # The greeting's response.create refused: no response.done will ever clear it.
    policy = thinking(caller_silence_s=10.0)
    assert policy.phase is CallPhase.THINKING and policy.next_deadline == 1.0 + 1800.0
    error = RealtimeErrorReported(
        "invalid_request_error", "invalid_value", "bad response", refused_response=True
    )
    assert kinds(policy.handle(error, 2.0)) == [ProblemNoted]
    assert policy.phase is CallPhase.IDLE
    assert policy.next_deadline == 2.0 + 10.0  # the silence timer runs again
    again = policy.handle(error, 3.0)  # refused again: not asked again, no loop
    assert kinds(again) == [ProblemNoted]
    keys = thinking()  # the greeting asked for, then keys pressed: a reply is wanted too
    feed(keys, [DtmfReceived(5, "MZ1", "inbound_track", "#")])
    assert kinds(keys.handle(error, 2.0)) == [ProblemNoted, CreateResponse]
    other = thinking()  # an error about something else leaves the request waiting
    other.handle(RealtimeErrorReported("invalid_request_error", "invalid_value", "x"), 2.0)
    assert other.phase is CallPhase.THINKING


def test_persistent_peer_errors_end_the_call_cleanly() -> None:
    policy = idle(max_peer_errors=3)
    bad = TwilioMessageRejected(TwilioProtocolError("invalid_json", "bad"))
    assert kinds(feed(policy, [bad, bad])) == [ProblemNoted, ProblemNoted]
    assert kinds(policy.handle(bad, 2.0)) == [ProblemNoted, HangUp, FinishCall]
    assert HangUp("twilio_protocol_errors") in feed(idle(max_peer_errors=1), [bad])


def test_stream_stop_finishes_without_a_rest_hangup() -> None:
    policy = speaking()
    stopped = policy.handle(SAMPLES["stop"], 3.0)
    assert FinishCall("stream_stopped") in stopped and not any(
        isinstance(a, HangUp) for a in stopped
    )
    assert policy.handle(TwilioClosed(1006, ""), 3.1) == []
    assert feed(policy, [SAMPLES["media"]]) == []


def test_fatal_error_after_the_end_does_not_hang_up_twice() -> None:
    policy = ended()
    error = RealtimeErrorReported("invalid_request_error", "session_expired", "expired")
    assert kinds(policy.handle(error, 2.0)) == [ProblemNoted]
    error = RealtimeErrorReported("invalid_request_error", "invalid_api_key", "bad key")
    assert kinds(policy.handle(error, 2.0)) == [ProblemNoted]


def test_small_details_of_the_audio_path() -> None:
    policy = speaking()
    # an ack with more of ours still buffered keeps the agent speaking
    feed(policy, [PlaybackAcknowledged("item_A", 160, buffer_empty=False)])
    assert policy.phase is CallPhase.SPEAKING
    # a function-call item is not an agent turn
    assert policy.handle(OutputItemAdded("resp_1", "item_F", "function_call"), 2.0) == []
    # less than one frame is held back until more audio or the end of the item
    quiet = thinking()
    assert quiet.handle(AudioDelta("r", "item_Q", b64(b"\x01" * 100)), 2.0) == []
    assert quiet.phase is CallPhase.THINKING


def started_with(token: str | None, call_sid: str = "CA1") -> StreamStarted:
    params = {} if token is None else {"token": token}
    return StreamStarted(
        1, "MZ1", "AC1", call_sid, ("inbound",), MediaFormat("audio/x-mulaw", 8000, 1), params
    )


@pytest.mark.parametrize(
    ("token", "call_sid", "accepted"),
    [
        ("s3cret", "CA1", True),
        ("wrong", "CA1", False),
        (None, "CA1", False),
        ("s3cret", "CA2", False),
    ],
)
def test_stream_must_present_its_token_and_call_sid(
    token: str | None, call_sid: str, accepted: bool
) -> None:
    policy = awaiting(stream_token="s3cret")
    policy.expect_call_sid("CA1")
    feed(policy, [UPDATED])
    actions = policy.handle(started_with(token, call_sid), 1.0)
    if accepted:
        assert kinds(actions) == [CreateResponse]
        assert policy.phase is CallPhase.THINKING
    else:
        assert kinds(actions) == [ProblemNoted, HangUp, FinishCall]
        assert FinishCall("stream_refused", close_code=1008) in actions
        assert policy.phase is CallPhase.ENDED
        assert feed(policy, [SAMPLES["media"]]) == []  # no audio ever flows


@pytest.mark.parametrize(("token", "accepted"), [("s3cret", True), ("s3cre", False), ("", False)])
def test_only_the_calls_token_opens_its_stream(token: str, accepted: bool) -> None:
    policy = awaiting(stream_token="s3cret")
    feed(policy, [UPDATED])
    actions = policy.handle(started_with(token, "CA1"), 1.0)
    assert (FinishCall("stream_refused", close_code=1008) not in actions) is accepted


def test_latency_marks_time_the_callers_wait() -> None:
    policy = awaiting()
    feed(policy, [UPDATED], now=0.5)
    feed(policy, [START], now=1.0)
    feed(policy, [ResponseStarted("r1"), OutputItemAdded("r1", "item_A", "message")], now=1.1)
    first = policy.handle(AudioDelta("r1", "item_A", b64(b"\x01" * 320)), 1.25)
    assert LatencyMeasured("answer", 250.0) in first
    later = policy.handle(AudioDelta("r1", "item_A", b64(b"\x01" * 320)), 1.3)
    assert not any(isinstance(a, LatencyMeasured) for a in later)
    feed(policy, [ResponseDone("r1", "completed", None, None)], now=1.4)
    feed(policy, [SpeechStarted("u1", 100)], now=2.0)
    feed(policy, [SpeechStopped("u1", 900)], now=3.0)
    feed(policy, [ResponseStarted("r2"), OutputItemAdded("r2", "item_B", "message")], now=3.2)
    reply = policy.handle(AudioDelta("r2", "item_B", b64(b"\x02" * 160)), 3.6)
    assert LatencyMeasured("response", 600.0) in reply


def test_the_agents_level_is_news_once_100_ms_of_caller_audio_are_metered() -> None:
    policy = BUILDERS[P.SPEAKING]()
    frame = SAMPLES["media"]
    assert isinstance(frame, AudioReceived)
    seen = [[type(a) for a in policy.handle(frame, 5.0 + n * 0.02)] for n in range(5)]
    assert seen[:4] == [[ForwardCallerAudio]] * 4
    assert seen[4] == [ForwardCallerAudio, LevelsMeasured]  # the agent's audio is playing


def test_a_lost_realtime_socket_is_replaced_twice_then_the_call_ends() -> None:
    policy = idle()
    lost = RealtimeClosed(1006, "connection reset")
    for attempt in (1, 2):
        actions = policy.handle(lost, float(attempt))
        assert kinds(actions) == [ProblemNoted, RenewSession, ConfigureSession, SeedConversation]
        problem = actions[0]
        assert isinstance(problem, ProblemNoted)
        assert not problem.fatal and problem.message.endswith("reconnecting")
        feed(policy, [SessionCreated(f"sess_{attempt}", "gpt-realtime", None), UPDATED])
    final = policy.handle(lost, 3.0)
    assert kinds(final) == [ProblemNoted, HangUp, FinishCall]
    assert HangUp("realtime_closed") in final


def fail_reconnect(policy: CallPolicy, now: float) -> list[Action]:
    """The new session's socket could not be opened (the shell's word for it)."""
    return policy.handle(RealtimeClosed(None, "could not open a renewed session: refused"), now)


def test_a_new_session_that_cannot_connect_is_tried_again_after_a_growing_wait() -> None:
    policy = idle(caller_silence_s=10_000.0)  # no silence deadline to mask the next try
    policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)  # renewed at once
    now, waits = 2.0, []
    for _ in range(5):
        failed = fail_reconnect(policy, now)
        assert kinds(failed) == [ProblemNoted]  # not fatal, no renewal yet, no hang-up
        assert isinstance(failed[0], ProblemNoted) and failed[0].reason == "reconnect_failed"
        assert not failed[0].fatal
        due = policy.next_deadline
        assert due is not None and due > now
        assert policy.tick(due - 0.001) == []  # nothing before the back-off is over
        waits.append(due - now)
        now = due
        assert kinds(policy.tick(now)) == RENEWAL  # the next try
    # Jittered in the upper half of 0.25 s, 0.5 s, 1 s, 2 s, 2 s.
    bases = [min(RECONNECT_FIRST_S * 2**n, RECONNECT_MAX_S) for n in range(5)]
    assert all(base / 2 <= wait <= base for wait, base in zip(waits, bases, strict=True))
    assert policy.phase is not CallPhase.ENDED
    # It connects: the call goes on, and a later loss is tried at once, from a fresh wait.
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], now=now)
    assert kinds(policy.handle(RealtimeClosed(1006, "reset"), now + 60))[1:] == RENEWAL
    fail_reconnect(policy, now + 60)
    due = policy.next_deadline
    assert due is not None and RECONNECT_FIRST_S / 2 <= due - (now + 60) <= RECONNECT_FIRST_S


class Draws:
    """Stands in for the policy's random source: these numbers, in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def test_each_reconnect_wait_is_drawn_from_the_upper_half_of_its_step() -> None:
    policy = idle(caller_silence_s=10_000.0)
    policy._jitter = Draws(0.0, 1.0, 0.5)  # type: ignore[assignment]
    policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)
    now, waits = 2.0, []
    for _ in range(3):
        fail_reconnect(policy, now)
        due = policy.next_deadline
        assert due is not None
        waits.append(due - now)
        now = due
        assert kinds(policy.tick(now)) == RENEWAL
    # Steps of 0.25 s, 0.5 s and 1 s: half of the first, all of the second, 3/4 of the third.
    assert waits == pytest.approx([0.125, 0.5, 0.75])


def test_a_tools_output_after_its_session_was_lost_is_not_sent_to_the_new_one() -> None:
    policy = tool_wait()  # call_1 runs, asked by the first session
    lost = policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)
    assert CreateResponse(None) in lost  # the new session is asked to go on instead
    assert policy.phase is CallPhase.THINKING
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], now=2.2)
    assert policy.handle(ToolFinished("call_1", '{"slots": []}'), 2.5) == []


def test_reconnecting_gives_up_on_a_time_budget_not_a_count_of_tries() -> None:
    policy = idle(realtime_reconnect_budget_s=15.0)
    policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)
    now, tries = 2.0, 1
    while True:
        failed = fail_reconnect(policy, now)
        if HangUp("realtime_closed") in failed:
            break
        now = policy.next_deadline  # type: ignore[assignment]
        renewed = policy.tick(now)
        assert kinds(renewed) == RENEWAL
        tries += 1
        # Each try says which it is (a metric counts one move), and may wait only for
        # what is left of the budget to connect.
        [renewal] = [a for a in renewed if isinstance(a, RenewSession)]
        assert renewal.attempt == tries
        assert renewal.open_within_s == pytest.approx(15.0 - (now - 2.0))
    problem = failed[0]
    assert isinstance(problem, ProblemNoted) and problem.fatal
    assert "15 s" in problem.message and "refused" in problem.message
    assert kinds(failed) == [ProblemNoted, HangUp, FinishCall]
    assert tries > 3  # far more than the two reconnects a call is allowed
    assert 15.0 - RECONNECT_MAX_S <= now - 2.0 <= 15.0  # it tried until the budget was spent


def test_a_session_lost_while_a_reconnect_connects_is_one_more_failed_try() -> None:
    policy = idle()
    policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)
    # Connected, then closed before `session.created`: the loss is not over.
    assert kinds(policy.handle(RealtimeClosed(1011, "overloaded"), 2.1)) == [ProblemNoted]
    assert kinds(policy.tick(policy.next_deadline)) == RENEWAL  # type: ignore[arg-type]
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], now=3.0)
    # Not counted as a second loss: the next one is still replaced.
    assert kinds(policy.handle(RealtimeClosed(1006, "reset"), 9.0))[1:] == RENEWAL


def test_a_renewal_that_cannot_connect_is_tried_again_not_counted_as_a_loss() -> None:
    policy = idle(max_realtime_reconnects=0)
    expired = RealtimeErrorReported("invalid_request_error", "session_expired", "expired")
    assert RenewSession in kinds(policy.handle(expired, 2.0))
    failed = fail_reconnect(policy, 2.1)
    assert kinds(failed) == [ProblemNoted] and not failed[0].fatal  # type: ignore[union-attr]
    assert kinds(policy.tick(policy.next_deadline)) == RENEWAL  # type: ignore[arg-type]


def test_caller_audio_waits_for_no_socket_while_the_next_try_is_due() -> None:
    policy = idle()
    frame = SAMPLES["media"]
    policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)
    assert ForwardCallerAudio in kinds(policy.handle(frame, 2.01))  # queued for the new socket
    fail_reconnect(policy, 2.02)
    assert ForwardCallerAudio not in kinds(policy.handle(frame, 2.03))  # no socket will come
    policy.tick(policy.next_deadline)  # type: ignore[arg-type]
    assert ForwardCallerAudio in kinds(policy.handle(frame, 2.5))


def test_an_ended_call_makes_no_further_tries() -> None:
    policy = idle()
    policy.handle(RealtimeClosed(1006, "connection reset"), 2.0)
    fail_reconnect(policy, 2.1)
    policy.handle(HangupRequested("api"), 2.2)
    assert policy.next_deadline is None
    assert fail_reconnect(policy, 2.3) == []


# -- a forced renewal mid-reply ----------------------------------------------


def test_a_reply_cut_after_a_forced_renewal_keeps_what_was_heard() -> None:
    policy = speaking()  # item_A: 800 bytes (100 ms) generated, playing
    policy._playback.played["item_A"] = 800  # type: ignore[attr-defined]  # all played
    policy.handle(RealtimeClosed(1006, "connection reset"), 1.2)  # renewed at once
    actions = policy.handle(SpeechStarted("item_u", 10), 1.3)
    assert [a for a in actions if isinstance(a, AgentTurnInterrupted)] == [
        AgentTurnInterrupted("item_A", 100, 100)
    ]
    assert not [a for a in actions if isinstance(a, TruncateItem)]  # not the new session's


def test_a_reply_played_out_before_a_renewal_is_not_recorded_unheard_at_the_end() -> None:
    policy = speaking()
    policy._playback.played["item_A"] = 800  # type: ignore[attr-defined]
    policy.handle(RealtimeClosed(1006, "connection reset"), 1.2)
    cut = [
        a
        for a in policy.handle(HangupRequested("test"), 5.0)
        if isinstance(a, AgentTurnInterrupted)
    ]
    assert cut == [AgentTurnInterrupted("item_A", 100, 100, by="end")]


# -- replies queued behind one another at Twilio -----------------------------

ONE_SECOND = b64(b"\x01" * 8000)


class TrackedPlayback(PlaybackTracker):
    """The real tracker, fed what the policy sends (the shell's part)."""

    def follow(self, actions: list[Action], now: float) -> list[Action]:
        for action in actions:
            if isinstance(action, PlayAgentAudio):
                self.audio_sent(action.item_id, sum(map(len, action.frames)), now)
            elif isinstance(action, ClearPlayback):
                self.cleared(now)
        return actions


def reply(response_id: str, item_id: str, text: str) -> list[PolicyEvent]:
    """A whole reply of one second, generated at once."""
    return [
        ResponseStarted(response_id),
        OutputItemAdded(response_id, item_id, "message"),
        AudioDelta(response_id, item_id, ONE_SECOND),
        AudioDone(response_id, item_id),
        TranscriptDone(response_id, item_id, text),
        ResponseDone(response_id, "completed", None, None),
    ]


def two_replies_queued() -> tuple[CallPolicy, TrackedPlayback]:
    """Reply A generated in full at t=1.1 and playing until t=2.1; the caller presses
    `#` at 1.3 and reply B's audio, sent at 1.4, queues behind the rest of A."""
    playback = TrackedPlayback()
    policy = CallPolicy(make()[0].config, playback)
    feed(policy, [START, UPDATED])  # the greeting is asked for: reply A
    playback.follow(feed(policy, reply("r1", "item_A", "Hello, about your cleaning."), 1.1), 1.1)
    assert CreateResponse(None) in feed(policy, [DtmfReceived(5, "MZ1", "inbound", "#")], 1.3)
    started: list[PolicyEvent] = [ResponseStarted("r2"), OutputItemAdded("r2", "item_B", "message")]
    playback.follow(feed(policy, [*started, AudioDelta("r2", "item_B", ONE_SECOND)], 1.4), 1.4)
    return policy, playback


def test_a_barge_in_cuts_every_reply_queued_not_only_the_last() -> None:
    policy, playback = two_replies_queued()
    actions = playback.follow(policy.handle(SpeechStarted("item_U", 0), 1.5), 1.5)
    # Each is cut where the caller was in it: 400 ms into A, nothing of B.
    assert kinds(actions) == [
        CallerTurnStarted,
        ClearPlayback,
        TruncateItem,
        AgentTurnInterrupted,
        TruncateItem,
        AgentTurnInterrupted,
    ]
    assert actions[2:6] == [
        TruncateItem("item_A", 400),
        AgentTurnInterrupted("item_A", 400, 1000),
        TruncateItem("item_B", 0),
        AgentTurnInterrupted("item_B", 0, 1000),
    ]
    # Neither is heard further, nor recorded as finished.
    late = feed(policy, [AudioDone("r2", "item_B"), TranscriptDone("r2", "item_B", "Noted.")])
    assert kinds(late) == []


def test_the_calls_end_cuts_every_reply_queued_not_only_the_last() -> None:
    policy, _ = two_replies_queued()
    feed(policy, [AudioDone("r2", "item_B"), TranscriptDone("r2", "item_B", "Noted.")], 1.45)
    cuts = [
        a for a in policy.handle(HangupRequested("api"), 1.5) if type(a) is AgentTurnInterrupted
    ]
    assert cuts == [
        AgentTurnInterrupted("item_A", 400, 1000, by="end"),
        AgentTurnInterrupted("item_B", 0, 1000, by="end"),
    ]


def test_a_reply_played_out_before_the_barge_in_is_not_cut_nor_truncated() -> None:
    # All of A played (by interpolation) before the caller spoke; its last mark's echo
    # is not in yet. Truncating it would delete its transcript (protocols.md 3.6).
    policy, playback = make()
    feed(policy, [START, UPDATED])
    feed(policy, reply("r1", "item_A", "Hello."), 1.1)
    playback.played["item_A"] = 8000
    actions = policy.handle(SpeechStarted("item_U", 0), 2.2)
    assert kinds(actions) == [CallerTurnStarted, ClearPlayback]  # the clear is harmless
    assert policy.phase is CallPhase.IDLE


def test_a_barge_in_cuts_the_queued_reply_but_not_the_one_heard_whole_before_it() -> None:
    policy, playback = two_replies_queued()
    # At 2.2 s all of A has played (to 2.1 s), and 100 ms of B.
    actions = playback.follow(policy.handle(SpeechStarted("item_U", 0), 2.2), 2.2)
    assert kinds(actions) == [CallerTurnStarted, ClearPlayback, TruncateItem, AgentTurnInterrupted]
    assert actions[2:4] == [TruncateItem("item_B", 100), AgentTurnInterrupted("item_B", 100, 1000)]


def test_a_barge_in_after_the_buffer_emptied_asks_only_about_the_reply_since() -> None:
    policy, playback = make()
    feed(policy, [START, UPDATED])
    feed(policy, reply("r1", "item_A", "Hello."), 1.1)
    feed(policy, [PlaybackAcknowledged("item_A", 8000, buffer_empty=True)], 2.1)
    feed(policy, [DtmfReceived(5, "MZ1", "inbound", "#")], 2.2)
    feed(policy, [ResponseStarted("r2"), OutputItemAdded("r2", "item_B", "message")], 2.3)
    feed(policy, [AudioDelta("r2", "item_B", ONE_SECOND)], 2.3)
    playback.asked.clear()
    playback.played["item_B"] = 1600
    cut = [a for a in policy.handle(SpeechStarted("item_U", 0), 2.5) if type(a) is not PhaseChanged]
    assert playback.asked == [("item_B", 2.5)]
    assert cut[2:] == [TruncateItem("item_B", 200), AgentTurnInterrupted("item_B", 200, 1000)]


def test_a_barge_in_after_a_forced_renewal_cuts_the_old_reply_and_the_new_one() -> None:
    # A reply of the lost session still plays while the new session's reply queues.
    policy = speaking()  # item_A: 100 ms of the first session, playing
    playback = policy._playback
    assert isinstance(playback, FakePlayback)
    assert CreateResponse(None) in policy.handle(RealtimeClosed(1006, "reset"), 1.2)
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], 1.3)
    feed(policy, [ResponseStarted("r2"), OutputItemAdded("r2", "item_B", "message")], 1.3)
    feed(policy, [AudioDelta("r2", "item_B", ONE_SECOND)], 1.3)
    playback.played = {"item_A": 400, "item_B": 0}
    actions = policy.handle(SpeechStarted("item_U", 0), 1.4)
    assert [a for a in actions if type(a) in (TruncateItem, AgentTurnInterrupted)] == [
        AgentTurnInterrupted("item_A", 50, 100),  # not truncated: not the new session's
        TruncateItem("item_B", 0),
        AgentTurnInterrupted("item_B", 0, 1000),
    ]


# -- a session lost before the greeting was heard ----------------------------

GREETING = "Hi, this is Ava from Bright Smiles."


def greeting_asked(actions: list[Action]) -> bool:
    return any(
        isinstance(a, CreateResponse) and a.instructions is not None and GREETING in a.instructions
        for a in actions
    )


def test_a_session_lost_while_the_phone_rings_greets_in_the_new_one() -> None:
    policy = awaiting(greeting=GREETING)
    feed(policy, [SessionCreated("sess_1", "gpt-realtime", None), UPDATED])
    actions = policy.handle(RealtimeClosed(1006, "lost"), 5.0)
    # Not told that the call is under way and not to greet: it has not begun.
    assert kinds(actions) == [ProblemNoted, RenewSession, ConfigureSession]
    assert kinds(feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], 6.0)) == []
    assert greeting_asked(policy.handle(START, 7.0))


def test_a_session_lost_during_the_greeting_before_its_audio_greets_again() -> None:
    policy = awaiting(greeting=GREETING)
    assert greeting_asked(
        feed(policy, [SessionCreated("sess_1", "gpt-realtime", None), UPDATED, START])
    )
    # The callee said something; the greeting's text began, none of its audio was sent.
    feed(policy, [SpeechStarted("item_U", 0), SpeechStopped("item_U", 500)], 1.05)
    feed(policy, [InputTranscriptCompleted("item_U", "Hello?")], 1.06)
    feed(policy, [ResponseStarted("r1"), OutputItemAdded("r1", "item_G", "message")], 1.1)
    feed(policy, [TranscriptDelta("r1", "item_G", "Hi, this is")], 1.1)
    actions = policy.handle(RealtimeClosed(1006, "lost"), 1.2)
    assert not any(isinstance(a, CreateResponse) for a in actions)  # not a bare re-ask
    seeds = [a for a in actions if isinstance(a, SeedConversation)]
    assert seeds == [SeedConversation(UNGREETED_NOTE, (("user", "Hello?"),))]  # no "Hi, this is"
    # The new session, once configured, gets the configured greeting.
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None)], 1.5)
    assert greeting_asked(policy.handle(UPDATED, 1.6))
    assert policy.phase is CallPhase.THINKING


def test_a_greeting_the_lost_session_began_is_cut_then_not_at_the_calls_end() -> None:
    policy = awaiting(greeting=GREETING)
    feed(policy, [SessionCreated("sess_1", "gpt-realtime", None), UPDATED, START])
    feed(policy, [ResponseStarted("r1"), OutputItemAdded("r1", "item_G", "message")], 1.1)
    feed(policy, [TranscriptDelta("r1", "item_G", "Hi, this is")], 1.1)
    lost = policy.handle(RealtimeClosed(1006, "lost"), 1.2)
    # It will never go on, and nothing of it was heard: cut at once, by the session.
    assert [a for a in lost if isinstance(a, AgentTurnInterrupted)] == [
        AgentTurnInterrupted("item_G", 0, 0, by="session")
    ]
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None)], 1.5)
    feed(policy, [UPDATED], 1.6)
    feed(policy, reply("r2", "item_G2", "Hi, this is Ava."), 2.0)
    feed(policy, [PlaybackAcknowledged("item_G2", 8000, buffer_empty=True)], 3.0)
    end = policy.handle(HangupRequested("api"), 300.0)
    assert [a for a in end if isinstance(a, AgentTurnInterrupted)] == []


def test_a_reply_still_playing_when_its_session_is_lost_is_cut_as_it_plays_on() -> None:
    policy = speaking()  # item_A: 100 ms of audio sent, still playing
    lost = policy.handle(RealtimeClosed(1006, "lost"), 1.2)
    assert not any(isinstance(a, AgentTurnInterrupted) for a in lost)
    end = policy.handle(HangupRequested("api"), 1.21)
    assert [a for a in end if isinstance(a, AgentTurnInterrupted)] == [
        AgentTurnInterrupted("item_A", 0, 100, by="end")
    ]


def test_a_reply_its_lost_session_left_playing_is_cut_once_it_played_out() -> None:
    policy = speaking()  # item_A: 100 ms sent, playing
    policy.handle(RealtimeClosed(1006, "lost"), 1.2)
    feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], 1.5)
    played = policy.handle(PlaybackAcknowledged("item_A", 800, buffer_empty=True), 1.6)
    assert [a for a in played if isinstance(a, AgentTurnInterrupted)] == [
        AgentTurnInterrupted("item_A", 100, 100, by="session")  # heard all there was of it
    ]
    # Neither a later barge-in nor the end cuts it again.
    feed(policy, reply("r3", "item_C", "More."), 10.0)
    barge_in = policy.handle(SpeechStarted("item_U", 100), 10.2)
    assert [a.item_id for a in barge_in if isinstance(a, AgentTurnInterrupted)] == ["item_C"]
    end = policy.handle(HangupRequested("api"), 300.0)
    assert not any(isinstance(a, AgentTurnInterrupted) for a in end)


def test_the_new_session_is_told_only_what_was_heard_of_the_lost_reply() -> None:
    policy = idle()  # "Hello." heard whole
    feed(policy, [SpeechStarted("item_U", 100), SpeechStopped("item_U", 900)], 2.0)
    said = TranscriptDelta("r2", "item_B", "Your appointment is on Friday at nine.")
    feed(policy, [ResponseStarted("r2"), OutputItemAdded("r2", "item_B", "message"), said], 3.0)
    lost = policy.handle(RealtimeClosed(1006, "lost"), 3.1)
    assert AgentTurnInterrupted("item_B", 0, 0, by="session") in lost
    (seed,) = [a for a in lost if isinstance(a, SeedConversation)]
    assert seed.turns == (("assistant", "Hello."),)  # nothing of the lost reply was heard
    assert CreateResponse(None) in lost  # so it is asked for again


def test_a_session_lost_once_the_greeting_was_sent_does_not_greet_again() -> None:
    policy = speaking(greeting=GREETING)  # some of the greeting went to the phone
    actions = policy.handle(RealtimeClosed(1006, "lost"), 1.2)
    seeds = [a for a in actions if isinstance(a, SeedConversation)]
    assert [seed.note for seed in seeds] == [RENEWED_NOTE]
    assert CreateResponse(None) in actions  # the reply it could not finish
    renewed = feed(policy, [SessionCreated("sess_2", "gpt-realtime", None), UPDATED], 1.5)
    assert not any(isinstance(a, CreateResponse) for a in renewed)
