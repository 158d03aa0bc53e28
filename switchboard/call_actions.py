"""What the call policy decides, as data.

Three kinds of message cross the policy's boundary:

- **Inputs from the shell** (past tense, besides the two cores' own events):
  ``ToolFinished``, ``HangupRequested``, ``RealtimeClosed``, ``TwilioClosed``.
- **Commands** (verbs) the bridge applies to the two protocol cores
  (``ForwardCallerAudio``, ``PlayAgentAudio``, ``ClearPlayback``, ...) or the
  shell carries out (``RunTool``, ``HangUp``, ``FinishCall``, ``RenewSession``).
- **Notices** (past tense) for the call record and the live event stream:
  transcripts in conversation order, interruptions, usage, problems.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.realtime_events import Usage
from switchboard.session_config import SessionConfig

__all__ = [
    "Action",
    "AddUserText",
    "AgentTranscriptGrew",
    "AgentTurnFinished",
    "AgentTurnInterrupted",
    "AgentTurnStarted",
    "CallEnded",
    "CallerTurnStarted",
    "CallerTurnTranscribed",
    "CancelResponse",
    "ClearPlayback",
    "Command",
    "ConfigureSession",
    "CreateResponse",
    "FinishCall",
    "ForwardCallerAudio",
    "HangUp",
    "HangupRequested",
    "LatencyMeasured",
    "Notice",
    "PhaseChanged",
    "PlayAgentAudio",
    "ProblemNoted",
    "RealtimeClosed",
    "RenewSession",
    "RunTool",
    "SeedConversation",
    "SendFunctionOutput",
    "ShellEvent",
    "ToolFinished",
    "ToolReturned",
    "TruncateItem",
    "TwilioClosed",
    "UsageReported",
]


# -- inputs from the shell ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolFinished:
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class HangupRequested:
    reason: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """Twilio reports the call over (busy, no-answer, failed, canceled, completed)."""

    status: str


@dataclass(frozen=True, slots=True)
class RealtimeClosed:
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class TwilioClosed:
    code: int | None
    reason: str


ShellEvent = ToolFinished | HangupRequested | CallEnded | RealtimeClosed | TwilioClosed


# -- commands for the cores --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigureSession:
    config: SessionConfig


@dataclass(frozen=True, slots=True)
class ForwardCallerAudio:
    payload: str  # base64 mu-law, as Twilio sent it


@dataclass(frozen=True, slots=True)
class PlayAgentAudio:
    item_id: str
    frames: tuple[bytes, ...]  # 20 ms mu-law frames, each followed by a mark


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    pass


@dataclass(frozen=True, slots=True)
class TruncateItem:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class CancelResponse:
    pass


@dataclass(frozen=True, slots=True)
class CreateResponse:
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class AddUserText:
    text: str


@dataclass(frozen=True, slots=True)
class SendFunctionOutput:
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class SeedConversation:
    """Give a renewed session the call so far: a note, then (role, text) turns, oldest first."""

    note: str
    turns: tuple[tuple[str, str], ...]


# -- commands for the shell --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunTool:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call through Twilio's REST API (the stream cannot do it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class FinishCall:
    """The call is over: close both sockets (Twilio's with ``close_code``) and seal the record."""

    reason: str
    close_code: int = 1000  # 1008 when the stream failed its one-time token check


@dataclass(frozen=True, slots=True)
class RenewSession:
    """Move the call to a fresh Realtime session (the current one nears its 60-minute cap).

    No command for the old session precedes it in its batch: the bridge starts the new
    session's core here, so every later command goes to the new session, and the shell
    swaps sockets before it sends any of them.
    """

    reason: str  # session_cap (renewed in time), session_expired, or realtime_lost
    # How long the new session may take to connect: what is left of the reconnect budget
    # (the caller hears nothing meanwhile). None: the shell's own limit alone.
    open_within_s: float | None = None
    # 1 for a move; 2, 3... for the tries again after a new session failed to connect:
    # one renewal, however many tries it took.
    attempt: int = 1


Command = (
    ConfigureSession
    | ForwardCallerAudio
    | PlayAgentAudio
    | ClearPlayback
    | TruncateItem
    | CancelResponse
    | CreateResponse
    | AddUserText
    | SendFunctionOutput
    | SeedConversation
    | RunTool
    | HangUp
    | FinishCall
    | RenewSession
)


# -- notices -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class CallerTurnStarted:
    """The caller started speaking; the turn's place in the conversation is here."""

    item_id: str


@dataclass(frozen=True, slots=True)
class ToolReturned:
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class CallerTurnTranscribed:
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AgentTurnStarted:
    item_id: str


@dataclass(frozen=True, slots=True)
class AgentTranscriptGrew:
    item_id: str
    delta: str
    # Where ``delta`` starts in the item's text: a report sent again applies it again
    # at the same place, so the text is not doubled (None: append).
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class AgentTurnFinished:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class AgentTurnInterrupted:
    """The agent's turn was cut off after ``heard_ms`` of ``generated_ms``: ``by`` the
    caller (a barge-in), by the call's ``end`` while it still played, or by the loss of
    its Realtime ``session`` (the reply never went on)."""

    item_id: str
    heard_ms: int
    generated_ms: int
    by: str = "caller"


@dataclass(frozen=True, slots=True)
class LatencyMeasured:
    """How long the caller waited: ``answer`` (stream start to the first agent audio)
    or ``response`` (the caller stopped speaking to the first audio of the reply)."""

    kind: str
    ms: float


@dataclass(frozen=True, slots=True)
class UsageReported:
    response_id: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ProblemNoted:
    source: str  # "twilio" | "realtime" | "policy" | "recorder" | "switchboard" | "store"
    reason: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class LevelsMeasured:
    """How loud each side is now (smoothed dBFS, floored), for the live meters."""

    caller_dbfs: float
    agent_dbfs: float


@dataclass(frozen=True, slots=True)
class CallStatusChanged:
    """The application moved the call's status (web calls, which no Twilio callback reports)."""

    status: str  # a Twilio call status: "in-progress", "completed", "no-answer"...


Notice = (
    PhaseChanged
    | CallerTurnStarted
    | CallerTurnTranscribed
    | ToolReturned
    | AgentTurnStarted
    | AgentTranscriptGrew
    | AgentTurnFinished
    | AgentTurnInterrupted
    | LatencyMeasured
    | UsageReported
    | ProblemNoted
    | CallStatusChanged
    | LevelsMeasured
)

Action = Command | Notice
