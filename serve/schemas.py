"""Request and response bodies of the call API, as pydantic models.

Requests are validated here, at the edge, with messages that name the field;
responses are built from the store's records (``from_record`` /
``from_detail``). ``serve.client`` parses responses with the same models, so
the two ends cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from switchboard.session_config import VOICES
from switchboard.store import CallDetail, CallPage, CallRecord, TimelineEvent, Turn
from switchboard.store.records import Direction
from switchboard.store.validation import text_problem

__all__ = [
    "MAX_DURATION_S",
    "MAX_GREETING_CHARS",
    "MAX_INSTRUCTION_CHARS",
    "MAX_METADATA_BYTES",
    "CallCreate",
    "CallDetailOut",
    "CallOut",
    "CallPageOut",
    "CallStatus",
    "CreateCallAlias",
    "ErrorOut",
    "HangupOut",
    "HealthOut",
    "PlaceFailedOut",
    "ReadyOut",
    "TimelineEventOut",
    "TurnOut",
    "UsageOut",
    "WebCallCreate",
    "WebCallOut",
    "e164",
]

MAX_INSTRUCTION_CHARS = 20_000
MAX_GREETING_CHARS = 2_000
MAX_METADATA_BYTES = 16_384
MAX_DURATION_S = 4 * 3600  # Twilio's own default TimeLimit
_EXAMPLE_NUMBER = "+15551234567"
# The store's statuses (switchboard.store.status.STATUSES), as a type: what the API answers.
CallStatus = Literal[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
]
# The deployment's MAX_CALL_DURATION_S caps it too; ``serve.api`` publishes that as the maximum.
_DURATION_HELP = "Seconds before the call is ended; at most the deployment's MAX_CALL_DURATION_S"


def e164(value: str, field: str = "number") -> str:
    """``value`` if it is a possible phone number written in E.164; an error naming ``field``."""
    if not value.startswith("+"):
        raise PydanticCustomError(
            "e164",
            "{field} must start with + and the country code (E.164), such as {example}",
            {"field": field, "example": _EXAMPLE_NUMBER},
        )
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise PydanticCustomError(
            "e164",
            "{field} is not a phone number in E.164 form such as {example} ({why})",
            {"field": field, "example": _EXAMPLE_NUMBER, "why": str(exc).split(") ", 1)[-1]},
        ) from None
    if not phonenumbers.is_possible_number(parsed):
        raise PydanticCustomError(
            "e164",
            "{field} is not a possible phone number: wrong length for its country code",
            {"field": field},
        )
    canonical = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if value != canonical:
        # Accepting "+1 (555) 123-4567" silently would store two spellings of one number.
        raise PydanticCustomError(
            "e164",
            "{field} must be written in E.164 form without spaces or punctuation: {canonical}",
            {"field": field, "canonical": canonical},
        )
    return value


def _check_phone(value: str | None, info: ValidationInfo) -> str | None:
    name = info.field_name or "number"
    return None if value is None else e164(value, "from" if name == "from_" else name)


def _valid_text(value: object) -> object:
    """Text that could not be stored, or answered, is refused before anything reads it."""
    problem = text_problem(value) if isinstance(value, str) else None
    if problem is not None:
        raise PydanticCustomError("text", "text {problem}", {"problem": problem})
    return value


Phone = Annotated[str, Field(max_length=32)]


def _text_problems(value: JsonValue, path: str) -> str | None:
    """The first string (key or value) in ``value`` that is not storable text, described."""
    if isinstance(value, str):
        problem = text_problem(value)
        return None if problem is None else f"{path} {problem}"
    if isinstance(value, list):
        items: list[tuple[str, JsonValue]] = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        for key in value:
            problem = text_problem(key)
            if problem is not None:
                return f"a key in {path} {problem}"
        items = [(f"{path}.{key}", v) for key, v in value.items()]
    else:
        return None
    for where, item in items:
        found = _text_problems(item, where)
        if found is not None:
            return found
    return None


def _bounded_metadata(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    problem = _text_problems(value, "metadata")
    if problem is not None:
        raise PydanticCustomError("metadata", "{problem}", {"problem": problem})
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise PydanticCustomError(
            "metadata", "metadata must be plain JSON (NaN and Infinity are not allowed)"
        ) from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise PydanticCustomError(
            "metadata",
            "metadata is too large: {size} bytes of JSON, at most {limit}",
            {"size": len(encoded.encode()), "limit": MAX_METADATA_BYTES},
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "instruction must not be blank")
    return value


def _known_voice(value: str | None) -> str | None:
    if value is not None and value not in VOICES:
        raise PydanticCustomError(
            "voice",
            "voice '{value}' is unknown; choose one of: {voices}",
            {"value": value, "voices": ", ".join(VOICES)},
        )
    return value


class CallCreate(BaseModel):
    """``POST /calls``: an outbound call to place."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    to: Phone = Field(description="The number to call, E.164", examples=[_EXAMPLE_NUMBER])
    instruction: str = Field(
        min_length=1,
        max_length=MAX_INSTRUCTION_CHARS,
        description="What the agent should do on this call (the session instructions)",
    )
    from_: Phone | None = Field(
        default=None,
        alias="from",
        description="Caller id, E.164; defaults to TWILIO_FROM_NUMBER",
    )
    voice: str | None = Field(default=None, description=f"One of: {', '.join(VOICES)}")
    greeting: str | None = Field(default=None, min_length=1, max_length=MAX_GREETING_CHARS)
    metadata: Annotated[dict[str, JsonValue], AfterValidator(_bounded_metadata)] = Field(
        default_factory=dict, description=f"Any JSON object, at most {MAX_METADATA_BYTES} bytes"
    )
    # Strict: JSON's true is not 1 s, nor "600" a number.
    max_duration_s: int | None = Field(
        default=None, ge=1, le=MAX_DURATION_S, strict=True, description=_DURATION_HELP
    )

    _text = field_validator("to", "from_", "instruction", "voice", "greeting", mode="before")(
        _valid_text
    )
    _phones = field_validator("to", "from_")(_check_phone)
    _instruction = field_validator("instruction")(_not_blank)
    _voice = field_validator("voice")(_known_voice)


class CreateCallAlias(BaseModel):
    """``POST /create-call``: the original UI's contract, kept as an alias of ``POST /calls``."""

    model_config = ConfigDict(extra="forbid")

    userPhone: Phone  # the original UI's field name
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)

    _text = field_validator("userPhone", "instruction", mode="before")(_valid_text)
    _phones = field_validator("userPhone")(_check_phone)
    _instruction = field_validator("instruction")(_not_blank)

    def to_call(self) -> CallCreate:
        return CallCreate(to=self.userPhone, instruction=self.instruction)


class WebCallCreate(BaseModel):
    """``POST /calls/web``: a call whose phone is the browser (Media Streams over WebSocket)."""

    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)
    voice: str | None = Field(default=None, description=f"One of: {', '.join(VOICES)}")
    greeting: str | None = Field(default=None, min_length=1, max_length=MAX_GREETING_CHARS)
    metadata: Annotated[dict[str, JsonValue], AfterValidator(_bounded_metadata)] = Field(
        default_factory=dict, description=f"Any JSON object, at most {MAX_METADATA_BYTES} bytes"
    )
    # Strict: JSON's true is not 1 s, nor "600" a number.
    max_duration_s: int | None = Field(
        default=None, ge=1, le=MAX_DURATION_S, strict=True, description=_DURATION_HELP
    )

    _text = field_validator("instruction", "voice", "greeting", mode="before")(_valid_text)
    _instruction = field_validator("instruction")(_not_blank)
    _voice = field_validator("voice")(_known_voice)


class CallOut(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    id: str
    direction: Direction
    to: str
    from_: str = Field(alias="from")
    instruction: str
    voice: str | None
    greeting: str | None
    metadata: dict[str, JsonValue]
    max_duration_s: int | None
    status: CallStatus
    twilio_sid: str | None
    created_at: datetime
    updated_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None

    @classmethod
    def from_record(cls, record: CallRecord) -> CallOut:
        return cls.model_validate(
            {
                "id": record.id,
                "direction": record.direction,
                "to": record.to,
                "from": record.from_,
                "instruction": record.instruction,
                "voice": record.voice,
                "greeting": record.greeting,
                "metadata": record.metadata,
                "max_duration_s": record.max_duration_s,
                "status": record.status,
                "twilio_sid": record.twilio_sid,
                "created_at": record.created_at,
                "updated_at": record.updated_at,
                "answered_at": record.answered_at,
                "ended_at": record.ended_at,
                "duration_s": record.duration_s,
            }
        )


class TimelineEventOut(BaseModel):
    kind: str
    at: datetime
    data: dict[str, JsonValue]

    @classmethod
    def from_event(cls, event: TimelineEvent) -> TimelineEventOut:
        return cls.model_validate({"kind": event.kind, "at": event.at, "data": event.data})


class TurnOut(BaseModel):
    """One transcript turn; an interrupted agent turn keeps all it generated and what was heard."""

    item_id: str
    role: Literal["caller", "agent"]
    state: str = Field(
        description="caller: pending (spoke, transcript not in yet), transcribed, or"
        " untranscribed (the call ended without one); agent: speaking, finished, interrupted"
    )
    text: str | None
    interrupted: bool
    heard_text: str | None = Field(
        description="an interrupted reply: the part the caller heard; empty with heard_ms"
        " null when the call ended while it played (nothing is known to have been heard)"
    )
    heard_ms: int | None
    generated_ms: int | None
    started_at: datetime
    ended_at: datetime | None

    @classmethod
    def from_turn(cls, turn: Turn) -> TurnOut:
        return cls(
            item_id=turn.item_id,
            role=turn.role,
            state=turn.state,
            text=turn.text,
            interrupted=turn.interrupted,
            heard_text=turn.heard_text,
            heard_ms=turn.heard_ms,
            generated_ms=turn.generated_ms,
            started_at=turn.started_at,
            ended_at=turn.ended_at,
        )


class UsageOut(BaseModel):
    total_tokens: int
    input_tokens: int
    output_tokens: int
    input_audio_tokens: int
    input_text_tokens: int
    input_cached_tokens: int
    output_audio_tokens: int
    output_text_tokens: int


class CallDetailOut(CallOut):
    timeline: list[TimelineEventOut]
    transcript: list[TurnOut]  # conversation order
    usage: UsageOut
    cost_usd: str = Field(description="Estimated model cost in US dollars, a decimal string")

    @classmethod
    def from_detail(cls, detail: CallDetail) -> CallDetailOut:
        base = CallOut.from_record(detail.call).model_dump(by_alias=True)
        return cls.model_validate(
            base
            | {
                "timeline": [TimelineEventOut.from_event(e) for e in detail.timeline],
                "transcript": [TurnOut.from_turn(t) for t in detail.transcript],
                "usage": UsageOut(**asdict(detail.usage)),
                "cost_usd": str(detail.cost_usd),
            }
        )


class WebCallOut(BaseModel):
    """What a browser needs to be the phone: where to connect, what to say in ``start``."""

    call: CallOut
    media_url: str = Field(description="The Media Streams WebSocket (ws:// or wss://) to open")
    call_sid: str = Field(description="The callSid the `start` message must carry")
    stream_token: str = Field(
        description="One-time token: the `start` message's customParameters.token"
    )


class CallPageOut(BaseModel):
    calls: list[CallOut]  # newest first
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end"
    )

    @classmethod
    def from_page(cls, page: CallPage) -> CallPageOut:
        return cls(calls=[CallOut.from_record(c) for c in page.calls], next_cursor=page.next_cursor)


class HangupOut(BaseModel):
    id: str
    hangup: Literal["requested"] = "requested"


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, str]


class ErrorOut(BaseModel):
    detail: str


class PlaceFailedOut(BaseModel):
    """``POST /calls`` when the call could not be placed; the call is recorded as failed."""

    detail: str
    error: str = Field(description="The cause's class, e.g. TwilioServiceError")
    code: int | None = Field(default=None, description="The service's error code, if it gave one")
    call: CallOut
