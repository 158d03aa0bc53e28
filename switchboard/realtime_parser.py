"""Parse one OpenAI Realtime (GA) server frame into a typed event (protocols.md 3.4).

Stateless: ``parse_server_event(text, max_size)`` never raises on bad input.
It returns ``RealtimeMessageRejected`` for frames that are too long, not JSON,
not an object, without a string ``type``, of a beta or unknown type, or whose
fields the bridge reads have the wrong JSON type. Valid GA events the bridge
does not act on become ``RealtimeEventIgnored``.

Only the fields the bridge reads are checked; full schema validation is the
emulator's and the tests' job (pydantic is far too slow for audio deltas).
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from switchboard.errors import RealtimeProtocolError
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
    Usage,
)

__all__ = ["BETA_EVENT_TYPES", "IGNORED_EVENT_TYPES", "RAW_PREFIX_LENGTH", "parse_server_event"]

RAW_PREFIX_LENGTH = 120

# Valid GA server events (openai 3.57 ``RealtimeServerEvent``) the bridge has no use for.
IGNORED_EVENT_TYPES = frozenset(
    {
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.deleted",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.retrieved",
        "input_audio_buffer.cleared",
        "input_audio_buffer.dtmf_event_received",
        "input_audio_buffer.timeout_triggered",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "mcp_list_tools.in_progress",
        "output_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.output_item.done",
    }
)

# Beta-only names (protocols.md 3.8) mapped to their GA replacement, so a
# rejection says what a beta-era peer should have sent.
BETA_EVENT_TYPES: Mapping[str, str] = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "transcription_session.created": "session.created",
    "transcription_session.updated": "session.updated",
}

_MISSING = object()
_JSON_KINDS = {dict: "object", list: "array", str: "string", bool: "boolean", float: "number"}

Obj = Mapping[str, object]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return "integer" if type(value) is int else _JSON_KINDS.get(type(value), "number")


def _bad(obj: Obj, key: str, etype: str, prefix: str, expected: str) -> RealtimeProtocolError:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        return RealtimeProtocolError("missing_field", f"{etype}: missing field '{prefix}{key}'")
    return RealtimeProtocolError(
        "invalid_field", f"{etype}: field '{prefix}{key}' must be {expected}, got {_kind(value)}"
    )


def _str(obj: Obj, key: str, etype: str, prefix: str = "") -> str:
    value = obj.get(key)
    if type(value) is str:
        return value
    raise _bad(obj, key, etype, prefix, "a string")


def _opt_str(obj: Obj, key: str, etype: str, prefix: str = "") -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise _bad(obj, key, etype, prefix, "a string or null")


def _int(obj: Obj, key: str, etype: str, prefix: str = "") -> int:
    value = obj.get(key)
    if type(value) is int:
        return value
    raise _bad(obj, key, etype, prefix, "an integer")


def _opt_int(obj: Obj, key: str, etype: str, prefix: str = "") -> int | None:
    value = obj.get(key)
    if value is None or type(value) is int:
        return value
    raise _bad(obj, key, etype, prefix, "an integer or null")


def _obj(obj: Obj, key: str, etype: str, prefix: str = "") -> Obj:
    value = obj.get(key)
    if type(value) is dict:
        return value
    raise _bad(obj, key, etype, prefix, "an object")


def _opt_obj(obj: Obj, key: str, etype: str, prefix: str = "") -> Obj | None:
    value = obj.get(key)
    if value is None or type(value) is dict:
        return value
    raise _bad(obj, key, etype, prefix, "an object or null")


def _count(obj: Obj | None, key: str, etype: str, prefix: str) -> int:
    # Every usage count is optional in the GA schema; absent means 0.
    return 0 if obj is None else (_opt_int(obj, key, etype, prefix) or 0)


def _usage(response: Obj, etype: str) -> Usage | None:
    usage = _opt_obj(response, "usage", etype, "response.")
    if usage is None:
        return None
    at = "response.usage."
    inputs = _opt_obj(usage, "input_token_details", etype, at)
    outputs = _opt_obj(usage, "output_token_details", etype, at)
    in_at, out_at = at + "input_token_details.", at + "output_token_details."
    return Usage(
        total_tokens=_count(usage, "total_tokens", etype, at),
        input_tokens=_count(usage, "input_tokens", etype, at),
        output_tokens=_count(usage, "output_tokens", etype, at),
        input_audio_tokens=_count(inputs, "audio_tokens", etype, in_at),
        input_text_tokens=_count(inputs, "text_tokens", etype, in_at),
        input_cached_tokens=_count(inputs, "cached_tokens", etype, in_at),
        output_audio_tokens=_count(outputs, "audio_tokens", etype, out_at),
        output_text_tokens=_count(outputs, "text_tokens", etype, out_at),
    )


def _session_updated(msg: Obj, etype: str) -> SessionUpdated:
    session = _obj(msg, "session", etype)
    audio = _obj(session, "audio", etype, "session.")
    formats: list[str] = []
    for direction in ("input", "output"):
        at = f"session.audio.{direction}."
        fmt = _obj(_obj(audio, direction, etype, "session.audio."), "format", etype, at)
        formats.append(_str(fmt, "type", etype, at + "format."))
    output = _obj(audio, "output", etype, "session.audio.")
    custom = output.get("voice")
    voice: str | None
    if type(custom) is dict:  # a custom voice: {"id": "voice_..."}
        voice = _str(custom, "id", etype, "session.audio.output.voice.")
    else:
        voice = _opt_str(output, "voice", etype, "session.audio.output.")
    return SessionUpdated(input_format=formats[0], output_format=formats[1], voice=voice)


def _response_done(msg: Obj, etype: str) -> ResponseDone:
    response = _obj(msg, "response", etype)
    details = _opt_obj(response, "status_details", etype, "response.")
    reason = (
        None if details is None else _opt_str(details, "reason", etype, "response.status_details.")
    )
    return ResponseDone(
        response_id=_str(response, "id", etype, "response."),
        status=_str(response, "status", etype, "response."),
        reason=reason,
        usage=_usage(response, etype),
    )


def _decode(msg: Obj, etype: str) -> RealtimeEvent:
    match etype:
        case "response.output_audio.delta":  # the hot path: first, and flat
            return AudioDelta(
                _str(msg, "response_id", etype),
                _str(msg, "item_id", etype),
                _str(msg, "delta", etype),
            )
        case "response.output_audio_transcript.delta" | "response.output_text.delta":
            return TranscriptDelta(
                _str(msg, "response_id", etype),
                _str(msg, "item_id", etype),
                _str(msg, "delta", etype),
            )
        case "input_audio_buffer.speech_started":
            return SpeechStarted(_str(msg, "item_id", etype), _int(msg, "audio_start_ms", etype))
        case "input_audio_buffer.speech_stopped":
            return SpeechStopped(_str(msg, "item_id", etype), _int(msg, "audio_end_ms", etype))
        case "input_audio_buffer.committed":
            return InputCommitted(
                _str(msg, "item_id", etype), _opt_str(msg, "previous_item_id", etype)
            )
        case "conversation.item.input_audio_transcription.delta":
            delta = _opt_str(msg, "delta", etype) or ""
            return InputTranscriptDelta(_str(msg, "item_id", etype), delta)
        case "conversation.item.input_audio_transcription.completed":
            return InputTranscriptCompleted(
                _str(msg, "item_id", etype), _str(msg, "transcript", etype)
            )
        case "conversation.item.input_audio_transcription.failed":
            error = _obj(msg, "error", etype)
            message = _opt_str(error, "message", etype, "error.") or ""
            return InputTranscriptFailed(_str(msg, "item_id", etype), message)
        case "response.created":
            response = _obj(msg, "response", etype)
            return ResponseStarted(_str(response, "id", etype, "response."))
        case "response.output_item.added":
            item = _obj(msg, "item", etype)
            return OutputItemAdded(
                response_id=_str(msg, "response_id", etype),
                item_id=_str(item, "id", etype, "item."),
                item_type=_str(item, "type", etype, "item."),
            )
        case "response.output_audio.done":
            return AudioDone(_str(msg, "response_id", etype), _str(msg, "item_id", etype))
        case "response.output_audio_transcript.done" | "response.output_text.done":
            key = "transcript" if etype == "response.output_audio_transcript.done" else "text"
            return TranscriptDone(
                _str(msg, "response_id", etype), _str(msg, "item_id", etype), _str(msg, key, etype)
            )
        case "response.function_call_arguments.done":
            return FunctionCallRequested(
                response_id=_str(msg, "response_id", etype),
                item_id=_str(msg, "item_id", etype),
                call_id=_str(msg, "call_id", etype),
                name=_str(msg, "name", etype),
                arguments=_str(msg, "arguments", etype),
            )
        case "response.done":
            return _response_done(msg, etype)
        case "conversation.item.truncated":
            return ItemTruncated(_str(msg, "item_id", etype), _int(msg, "audio_end_ms", etype))
        case "error":
            error = _obj(msg, "error", etype)
            return RealtimeErrorReported(
                type=_str(error, "type", etype, "error."),
                code=_opt_str(error, "code", etype, "error."),
                message=_str(error, "message", etype, "error."),
                param=_opt_str(error, "param", etype, "error."),
                event_id=_opt_str(error, "event_id", etype, "error."),
            )
        case "session.created":
            session = _obj(msg, "session", etype)
            return SessionCreated(
                session_id=_str(session, "id", etype, "session."),
                model=_str(session, "model", etype, "session."),
                expires_at=_opt_int(session, "expires_at", etype, "session."),
            )
        case "session.updated":
            return _session_updated(msg, etype)
        case _ if etype in IGNORED_EVENT_TYPES:
            return RealtimeEventIgnored(etype)
        case _ if etype in BETA_EVENT_TYPES:
            raise RealtimeProtocolError(
                "beta_event",
                f"beta event type {etype!r} is not part of the GA protocol "
                f"(GA name: {BETA_EVENT_TYPES[etype]!r})",
            )
        case _:
            raise RealtimeProtocolError("unknown_event", f"unknown event type {etype!r}")


def _prefix(text: str | bytes) -> str:
    head = text[:RAW_PREFIX_LENGTH]
    return head.decode("utf-8", "replace") if isinstance(head, bytes) else head


def parse_server_event(text: str | bytes, max_size: int) -> RealtimeEvent:
    """One server frame -> one typed event; ``max_size`` bounds ``len(text)``."""
    try:
        if len(text) > max_size:
            unit = "bytes" if isinstance(text, bytes) else "characters"
            raise RealtimeProtocolError(
                "message_too_large",
                f"message of {len(text)} {unit} exceeds the limit of {max_size}",
            )
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RealtimeProtocolError("invalid_json", f"not valid JSON: {exc}") from None
        if type(msg) is not dict:
            raise RealtimeProtocolError(
                "not_an_object", f"expected a JSON object, got {_kind(msg)}"
            )
        etype = msg.get("type")
        if type(etype) is not str:
            raise _bad(msg, "type", "event", "", "a string")
        return _decode(msg, etype)
    except RealtimeProtocolError as exc:
        return RealtimeMessageRejected(exc, _prefix(text))
