"""Checking frames against the GA pydantic models of the ``openai`` SDK.

Client frames go through ``parse_client_event``: JSON, a ``type``, the beta
shape (protocols.md 3.8), then the model of that type (protocols.md 4.4) and
a key diff, because the SDK's models accept unknown keys (4.5). Failures come
back as ``ClientError`` with the code and wording the service uses.

Validation is strict (JSON types as sent: ``"5"`` is not an integer, as
the service says). Validating through the model of the frame's own ``type`` is what
``TypeAdapter(RealtimeClientEvent)`` does for a valid frame (the union is
keyed by ``type``), at a fifth of the cost, and it reports the error of the
member that was meant instead of one per member.

Server frames go through ``ServerValidator`` (test/debug mode): the same per
type check, and no keys beyond the models except the three the service adds
to the session object (``id``, ``object``, ``expires_at``, 4.5).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pydantic
from openai import BaseModel
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

__all__ = [
    "BETA_EVENT_TYPES",
    "CLIENT_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
    "ClientError",
    "ParsedEvent",
    "ServerValidator",
    "error_from_validation",
    "extra_keys",
    "parse_client_event",
]

BETA_SESSION_KEYS = frozenset(
    {
        "modalities",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "turn_detection",
        "max_response_output_tokens",
        "temperature",
    }
)
BETA_RESPONSE_KEYS = frozenset(
    {"modalities", "voice", "output_audio_format", "temperature", "max_response_output_tokens"}
)
BETA_EVENT_TYPES = frozenset({"transcription_session.update"})
BETA_MESSAGE = (
    "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
)
SESSION_EXTRAS = frozenset({("session", "id"), ("session", "object"), ("session", "expires_at")})


def _adapters(union: object) -> dict[str, pydantic.TypeAdapter[BaseModel]]:
    members = typing.get_args(typing.get_args(union)[0])
    table: dict[str, pydantic.TypeAdapter[BaseModel]] = {}
    for cls in members:
        (literal,) = typing.get_args(cls.model_fields["type"].annotation)
        table[literal] = pydantic.TypeAdapter(cls)
    return table


_CLIENT = _adapters(RealtimeClientEvent)
_SERVER = _adapters(RealtimeServerEvent)
CLIENT_EVENT_TYPES = tuple(_CLIENT)
SERVER_EVENT_TYPES = tuple(_SERVER)


@dataclass(frozen=True, slots=True)
class ClientError:
    """An ``error`` event to send; ``close`` is set when the session must end."""

    code: str | None
    message: str
    param: str | None = None
    event_id: str | None = None
    type: str = "invalid_request_error"
    close: tuple[int, str] | None = None

    def to_error(self) -> dict[str, object]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": self.event_id,
        }


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    type: str
    data: dict[str, typing.Any]
    model: BaseModel

    @property
    def event_id(self) -> str | None:
        value = self.data.get("event_id")
        return value if isinstance(value, str) else None


def beta_error(event_id: str | None = None) -> ClientError:
    return ClientError(
        "beta_api_shape_disabled",
        BETA_MESSAGE,
        event_id=event_id,
        close=(4000, "invalid_request_error.beta_api_shape_disabled"),
    )


def parse_client_event(text: str | bytes) -> ParsedEvent | ClientError:
    """Parse and validate one client frame."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return ClientError("invalid_json", f"Invalid JSON: {exc}")
    if not isinstance(data, dict):
        return ClientError("invalid_event", "Expected a JSON object for the event.")
    raw_id = data.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) else None
    kind = data.get("type")
    if kind is None:
        return ClientError("invalid_event", "The 'type' field is missing.", event_id=event_id)
    if _is_beta_shaped(kind, data):
        return beta_error(event_id)
    adapter = _CLIENT.get(kind) if isinstance(kind, str) else None
    if adapter is None:
        supported = ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES)
        return ClientError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: {supported}.",
            param="type",
            event_id=event_id,
        )
    try:
        model = adapter.validate_python(data, strict=True)
    except pydantic.ValidationError as exc:
        return error_from_validation(exc, event_id)
    for path in extra_keys(model):
        return ClientError(
            "unknown_parameter", f"Unknown parameter: '{path}'.", param=path, event_id=event_id
        )
    return ParsedEvent(kind, data, model)


def _is_beta_shaped(kind: object, data: dict[str, typing.Any]) -> bool:
    if kind in BETA_EVENT_TYPES:
        return True
    if kind == "session.update":
        session = data.get("session")
        return isinstance(session, dict) and not BETA_SESSION_KEYS.isdisjoint(session)
    if kind == "response.create":
        response = data.get("response")
        return isinstance(response, dict) and not BETA_RESPONSE_KEYS.isdisjoint(response)
    return False


def extra_keys(model: object, prefix: str = "") -> Iterator[str]:
    """Dotted paths of keys the models did not declare (``extra="allow"`` keeps them)."""
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            yield f"{prefix}{key}"
        for name in type(model).model_fields:
            yield from extra_keys(getattr(model, name), f"{prefix}{name}.")
    elif isinstance(model, list):
        base = prefix[:-1]
        for i, value in enumerate(model):
            yield from extra_keys(value, f"{base}[{i}].")


def _is_tag(part: object) -> bool:
    # Union members appear in a pydantic loc as class names or "function-after[...]";
    # the API's own keys are all snake_case.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part)


def _best_errors(errors: list[typing.Any]) -> list[typing.Any]:
    """Keep the errors of the union member the client most plausibly meant."""
    errors = [dict(e, loc=tuple(e["loc"])) for e in errors]
    while True:
        tagged = [(i, e) for e in errors for i, p in enumerate(e["loc"]) if _is_tag(p)]
        if not tagged:
            return errors
        first = min(i for i, _ in tagged)
        groups: dict[object, list[typing.Any]] = {}
        for e in errors:
            key = e["loc"][first] if len(e["loc"]) > first and _is_tag(e["loc"][first]) else None
            groups.setdefault(key, []).append(e)

        candidates = [v for k, v in groups.items() if k is not None]
        scores = [_score(v, first) for v in candidates]
        chosen = candidates[scores.index(min(scores))]
        untagged = groups.get(None, [])
        errors = [dict(e, loc=e["loc"][:first] + e["loc"][first + 1 :]) for e in chosen] + untagged


def _score(errors: list[typing.Any], at: int) -> tuple[int, int]:
    """Fewer errors on the member's own ``type``/``role`` literal = the member meant."""
    wrong_kind = sum(
        1
        for e in errors
        if e["type"] == "literal_error"
        and len(e["loc"]) == at + 2
        and e["loc"][-1] in ("type", "role")
    )
    return wrong_kind, len(errors)


def _param(loc: tuple[object, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def error_from_validation(exc: pydantic.ValidationError, event_id: str | None) -> ClientError:
    """The service's wording for the most relevant pydantic error."""
    error = _best_errors(exc.errors())[0]
    param = _param(error["loc"])
    kind = error["type"]
    if kind == "missing":
        return ClientError(
            "missing_required_parameter",
            f"Missing required parameter: '{param}'.",
            param=param,
            event_id=event_id,
        )
    if kind in ("literal_error", "enum"):
        expected = error.get("ctx", {}).get("expected", "")
        return ClientError(
            "invalid_value",
            f"Invalid value: '{error['input']}'. Supported values are: {expected}.",
            param=param,
            event_id=event_id,
        )
    if kind.endswith("_type") or kind.endswith("_parsing"):
        got = type(error["input"]).__name__
        return ClientError(
            "invalid_type",
            f"Invalid type for '{param}': expected {kind.split('_')[0]}, but got {got} instead.",
            param=param,
            event_id=event_id,
        )
    return ClientError(
        "invalid_value",
        f"Invalid value for '{param}': {error['msg']}.",
        param=param,
        event_id=event_id,
    )


class ServerValidator:
    """Checks outgoing events; ``check`` returns problems instead of raising."""

    def check(self, event: dict[str, typing.Any]) -> list[str]:
        adapter = _SERVER.get(event.get("type"))  # type: ignore[arg-type]
        if adapter is None:
            return [f"unknown server event type {event.get('type')!r}"]
        try:
            model = adapter.validate_python(event, strict=True)
        except pydantic.ValidationError as exc:
            return [f"{event['type']}: {exc}"]
        problems = []
        for path in extra_keys(model):
            key = tuple(path.split("."))
            if key not in SESSION_EXTRAS:
                problems.append(f"{event['type']}: undeclared key {path}")
        return problems
