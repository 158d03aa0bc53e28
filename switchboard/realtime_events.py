"""Typed OpenAI Realtime (GA) server events the bridge acts on (protocols.md 3.4).

Produced only by ``switchboard.realtime_session.RealtimeSession.receive``.
Audio deltas stay base64 text (``audio/pcmu`` both ways), so they can go to
Twilio without a decode unless they must be re-framed. Server events the
bridge has no use for become ``RealtimeEventIgnored`` (named, not dropped
silently); events that break the protocol become ``RealtimeMessageRejected``.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.errors import RealtimeProtocolError

__all__ = [
    "ALREADY_ACTIVE",
    "AudioDelta",
    "AudioDone",
    "FunctionCallRequested",
    "InputCommitted",
    "InputTranscriptCompleted",
    "InputTranscriptDelta",
    "InputTranscriptFailed",
    "ItemTruncated",
    "OutputItemAdded",
    "RealtimeErrorReported",
    "RealtimeEvent",
    "RealtimeEventIgnored",
    "RealtimeMessageRejected",
    "ResponseDone",
    "ResponseStarted",
    "SessionCreated",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptDelta",
    "TranscriptDone",
    "Usage",
]

# The error code of a response.create refused because a response is already active.
ALREADY_ACTIVE = "conversation_already_has_active_response"


@dataclass(frozen=True, slots=True)
class SessionCreated:
    session_id: str
    model: str
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    """The server accepted ``session.update``; fields are the effective ones."""

    input_format: str
    output_format: str
    voice: str | None


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class InputTranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class InputTranscriptCompleted:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """``response.created``."""

    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    """``response.output_item.added``; ``item_type`` is ``message`` or ``function_call``."""

    response_id: str
    item_id: str
    item_type: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """``response.output_audio.delta``: base64 audio in the session's output format."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """``response.output_audio_transcript.delta`` (or ``output_text.delta``)."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    response_id: str
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class FunctionCallRequested:
    """``response.function_call_arguments.done``: the model wants a tool run."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    total_tokens: int
    input_tokens: int
    output_tokens: int
    input_audio_tokens: int = 0
    input_text_tokens: int = 0
    input_cached_tokens: int = 0
    output_audio_tokens: int = 0
    output_text_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """``response.done``; ``status`` is completed, cancelled, failed or incomplete."""

    response_id: str
    status: str
    reason: str | None
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class RealtimeErrorReported:
    """An ``error`` event from the service; most leave the session open."""

    type: str
    code: str | None
    message: str
    param: str | None = None
    event_id: str | None = None
    refused_update: bool = False  # it names a session.update of ours (set by the session)
    refused_response: bool = False  # it refused a response.create of ours (set by the session)


@dataclass(frozen=True, slots=True)
class RealtimeEventIgnored:
    """A valid server event the bridge does not act on (``rate_limits.updated``...)."""

    type: str


@dataclass(frozen=True, slots=True)
class RealtimeMessageRejected:
    error: RealtimeProtocolError
    raw_prefix: str = ""


RealtimeEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | InputTranscriptDelta
    | InputTranscriptCompleted
    | InputTranscriptFailed
    | ResponseStarted
    | OutputItemAdded
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionCallRequested
    | ResponseDone
    | ItemTruncated
    | RealtimeErrorReported
    | RealtimeEventIgnored
    | RealtimeMessageRejected
)
