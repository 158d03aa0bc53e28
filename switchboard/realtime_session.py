"""Sans-I/O core of one OpenAI Realtime (GA) session (protocols.md 3.2-3.6).

Theory of operation: the shell feeds every server text frame to
``receive(text, now)`` and gets typed events back (``realtime_events``); it
calls command methods (``configure``, ``append_audio``, ``create_response``,
``truncate``, ...) and then sends whatever ``data_to_send()`` returns, in
order. No sockets, no clock, no logging.

State the bridge needs is tracked here so that it is decided in one place:

- ``response_requested``: we sent ``response.create`` and it is not done;
  ``active_response_id``: ``response.created`` seen and no ``response.done``
  yet. ``create_response`` refuses while either is set (the server would say
  ``conversation_already_has_active_response``); ``cancel_response`` sends
  only while a response is active (else ``response_cancel_not_active``).
- ``current_item_id``: the latest assistant message item. It outlives its
  ``response.done`` on purpose: audio is generated faster than real time, so
  Twilio may still be playing it when the caller barges in. ``truncate`` of
  it clears it.
- audio received per item, counted from the base64 length without decoding,
  so ``truncate`` can clamp ``audio_end_ms`` to what exists (pcmu: 8 bytes/ms;
  truncating past the generated audio is a server error).
- function calls from ``response.function_call_arguments.done`` until their
  output is sent.

Server frames are parsed with orjson and dispatched on ``type``; no pydantic
at run time (``response.output_audio.delta`` is the hot path). Fields the
bridge reads are type-checked; anything wrong becomes
``RealtimeMessageRejected`` and never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from types import MappingProxyType

import orjson

from switchboard.errors import LocalProtocolError
from switchboard.realtime_events import (
    ALREADY_ACTIVE,
    AudioDelta,
    FunctionCallRequested,
    OutputItemAdded,
    RealtimeErrorReported,
    RealtimeEvent,
    ResponseDone,
    ResponseStarted,
    SessionCreated,
    SessionUpdated,
    Usage,
)
from switchboard.realtime_parser import parse_server_event
from switchboard.session_config import SessionConfig

__all__ = ["MAX_MESSAGE_SIZE", "PCMU_BYTES_PER_MS", "RealtimeSession", "decoded_length"]

# Server events are small (audio deltas are a few KiB of pcmu); a frame this
# big is a peer bug or an attack, not something to parse.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
# audio/pcmu is 8 kHz, one byte per sample.
PCMU_BYTES_PER_MS = 8
_ZERO_USAGE = Usage(total_tokens=0, input_tokens=0, output_tokens=0)


def decoded_length(b64: str) -> int:
    """Bytes a base64 string decodes to, from its length alone (no decode)."""
    padding = 2 if b64.endswith("==") else 1 if b64.endswith("=") else 0
    return max(len(b64) * 3 // 4 - padding, 0)


def _add_usage(total: Usage, more: Usage) -> Usage:
    return Usage(*(getattr(total, f.name) + getattr(more, f.name) for f in fields(Usage)))


class RealtimeSession:
    """One Realtime conversation: server text in, typed events out; commands in, text out.

    Call ``configure`` first, then stream caller audio with ``append_audio``;
    flush ``data_to_send()`` after every command and every ``receive``.
    """

    def __init__(self, *, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max_message_size = max_message_size
        self._outgoing: list[str] = []
        self._event_counter = 0
        self._configure_sent = False
        self._pending_updates: list[str] = []
        self._configured = False
        self._response_request_id: str | None = None
        self._active_response_id: str | None = None
        self._cancel_sent = False
        self._current_item_id: str | None = None
        self._audio_bytes: dict[str, int] = {}
        self._function_calls: dict[str, str] = {}
        self._usage = _ZERO_USAGE
        self.session_id: str | None = None
        self.model: str | None = None
        self.expires_at: int | None = None
        self.last_received_at: float | None = None

    # -- state -----------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """The latest ``session.update`` was acknowledged by ``session.updated``."""
        return self._configured

    @property
    def response_requested(self) -> bool:
        return self._response_request_id is not None

    @property
    def active_response_id(self) -> str | None:
        return self._active_response_id

    @property
    def current_item_id(self) -> str | None:
        return self._current_item_id

    @property
    def pending_function_calls(self) -> Mapping[str, str]:
        """``call_id -> function name`` for calls whose output has not been sent."""
        return MappingProxyType(self._function_calls)

    @property
    def usage_totals(self) -> Usage:
        """Token usage summed over every ``response.done`` so far."""
        return self._usage

    def audio_bytes(self, item_id: str) -> int:
        """pcmu bytes received so far for an assistant item (0 if unknown)."""
        return self._audio_bytes.get(item_id, 0)

    def audio_ms(self, item_id: str) -> int:
        return self._audio_bytes.get(item_id, 0) // PCMU_BYTES_PER_MS

    # -- commands ----------------------------------------------------------------

    def _next_event_id(self) -> str:
        # Client event ids let a server ``error`` name the event it refuses.
        self._event_counter += 1
        return f"sb_evt_{self._event_counter}"

    def _send(self, event: dict[str, object]) -> str:
        event_id = self._next_event_id()
        event["event_id"] = event_id
        self._outgoing.append(orjson.dumps(event).decode())
        return event_id

    def configure(self, config: SessionConfig) -> None:
        """Queue ``session.update`` with the whole GA session (pcmu both ways)."""
        payload = config.to_session_payload()
        self._pending_updates.append(self._send({"type": "session.update", "session": payload}))
        self._configure_sent = True
        self._configured = False

    def append_audio(self, audio_b64: str) -> None:
        """Queue caller audio (base64 pcmu, already validated by the Twilio core)."""
        if not self._configure_sent:
            # Before the pcmu session.update the server reads audio as pcm16 24 kHz.
            raise LocalProtocolError("append_audio before configure(): audio would be misread")
        # Hot path: base64 needs no JSON escaping, so build the frame as a string.
        self._outgoing.append('{"type":"input_audio_buffer.append","audio":"' + audio_b64 + '"}')

    def commit_audio(self) -> None:
        """Commit the input buffer (only needed with ``turn_detection=None``)."""
        self._send({"type": "input_audio_buffer.commit"})

    def clear_audio(self) -> None:
        self._send({"type": "input_audio_buffer.clear"})

    def _add_message(self, role: str, text: str) -> None:
        # GA content types: the assistant's text is output, everyone else's input.
        kind = "output_text" if role == "assistant" else "input_text"
        item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
        self._send({"type": "conversation.item.create", "item": item})

    def add_user_text(self, text: str) -> None:
        self._add_message("user", text)

    def add_system_text(self, text: str) -> None:
        self._add_message("system", text)

    def add_history(self, role: str, text: str) -> None:
        """Queue an earlier turn as a text item (``user`` or ``assistant``), no response."""
        if role not in ("user", "assistant"):
            raise LocalProtocolError(f"a history turn is a user's or an assistant's, not {role!r}")
        self._add_message(role, text)

    def create_response(self, instructions: str | None = None) -> None:
        """Queue ``response.create``; refused while a response is requested or active."""
        if self._response_request_id is not None or self._active_response_id is not None:
            raise LocalProtocolError(
                f"create_response while a response is in progress (requested event "
                f"{self._response_request_id}, active {self._active_response_id})"
            )
        event: dict[str, object] = {"type": "response.create"}
        if instructions is not None:
            event["response"] = {"instructions": instructions}
        self._response_request_id = self._send(event)

    def cancel_response(self) -> bool:
        """Send ``response.cancel`` if a response is active; return whether it was sent."""
        if self._active_response_id is None or self._cancel_sent:
            return False
        self._send({"type": "response.cancel", "response_id": self._active_response_id})
        self._cancel_sent = True
        return True

    def truncate(self, item_id: str, audio_end_ms: int) -> int:
        """Queue ``conversation.item.truncate``; return the clamped ``audio_end_ms`` sent."""
        if item_id not in self._audio_bytes:
            raise LocalProtocolError(f"truncate of unknown assistant item {item_id!r}")
        end_ms = min(max(audio_end_ms, 0), self.audio_ms(item_id))
        self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )
        if item_id == self._current_item_id:
            self._current_item_id = None
        return end_ms

    def send_function_output(self, call_id: str, output: str) -> None:
        """Queue the ``function_call_output`` item; follow with ``create_response()``."""
        if call_id not in self._function_calls:
            raise LocalProtocolError(f"no pending function call {call_id!r}")
        if not isinstance(output, str):
            raise LocalProtocolError("function output must be a str; JSON-encode it first")
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        self._send({"type": "conversation.item.create", "item": item})
        del self._function_calls[call_id]

    def data_to_send(self) -> list[str]:
        """Client event frames queued since the last call, oldest first."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    # -- server events -----------------------------------------------------------

    def receive(self, text: str | bytes, now: float) -> list[RealtimeEvent]:
        """Parse one server frame, update state, return its typed event."""
        self.last_received_at = now
        event = parse_server_event(text, self._max_message_size)
        match event:
            case AudioDelta(item_id=item_id, delta=delta):
                received = self._audio_bytes.get(item_id, 0)
                self._audio_bytes[item_id] = received + decoded_length(delta)
            case SessionCreated(session_id=session_id, model=model, expires_at=expires_at):
                self.session_id, self.model, self.expires_at = session_id, model, expires_at
            case SessionUpdated() if self._pending_updates:
                # The server answers events in order, so this acknowledges the oldest
                # update; the session is configured once the latest one is.
                del self._pending_updates[0]
                self._configured = not self._pending_updates
            case ResponseStarted(response_id=response_id):
                self._active_response_id = response_id
            case OutputItemAdded(item_id=item_id, item_type="message"):
                self._current_item_id = item_id
                self._audio_bytes.setdefault(item_id, 0)
            case FunctionCallRequested(call_id=call_id, name=name):
                self._function_calls[call_id] = name
            case ResponseDone(usage=usage):
                self._response_request_id = None
                self._active_response_id = None
                self._cancel_sent = False
                if usage is not None:
                    self._usage = _add_usage(self._usage, usage)
            case RealtimeErrorReported():
                refused_update, refused_response = self._on_error(event)
                if refused_update or refused_response:
                    event = replace(
                        event, refused_update=refused_update, refused_response=refused_response
                    )
            case _:
                pass
        return [event]

    def _on_error(self, error: RealtimeErrorReported) -> tuple[bool, bool]:
        """Clear what the error refused: whether it was one of our session updates, and
        whether it was our response.create."""
        refused = error.event_id
        refused_update = refused is not None and refused in self._pending_updates
        if refused is not None and refused_update:
            # A refused update is never acknowledged; ``configured`` stays False
            # until a later update is accepted.
            self._pending_updates.remove(refused)
        refused_response = self._response_request_id is not None and (
            refused == self._response_request_id or error.code == ALREADY_ACTIVE
        )
        if refused_response:
            # Our response.create was refused; no response.done will clear it.
            self._response_request_id = None
        return refused_update, refused_response
