"""One emulated Realtime GA session, as a sans-I/O state machine.

Theory of operation
-------------------
The shell feeds it client frames with ``receive(text, now)`` and calls
``tick(now)`` at ``next_deadline``; it drains ``outgoing()`` (server events
as dicts, ``event_id`` filled in) after each call and closes the socket with
``close`` once that is set. Nothing here touches a socket or a clock.

It implements protocols.md 3 and 5.2: ``session.created`` first, merged
``session.update``, the input buffer with server VAD (``InputBuffer``), the
caller-speaks flow (3.5: speech_started -> cancel the active response if
``interrupt_response`` -> speech_stopped -> committed -> item added/done ->
transcription -> response if ``create_response``), responses streamed on a
schedule (``ResponseRun``), function calls that wait for the client,
truncation bounded by the audio generated, cancellation, item CRUD and the
error events of 3.6 (most leave the session open; the beta shape, a refused
key and the 60-minute cap close it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from sim.realtime.items import ItemCommands
from sim.realtime.records import FrameRecord
from sim.realtime.replies import ReplyControl
from sim.realtime.turns import CallerTurns
from sim.realtime.validation import ClientError, ParsedEvent, beta_error, parse_client_event

__all__ = ["RealtimeSession"]


class RealtimeSession(CallerTurns, ReplyControl, ItemCommands):
    """One session; see the module docstring and ``SessionState`` for the keywords."""

    # -- shell interface -----------------------------------------------------------

    def start(self) -> None:
        """Emit the greeting events: ``session.created`` then ``conversation.created``."""
        self.emit("session.created", session=self.config.snapshot())
        self.emit(
            "conversation.created",
            conversation={"id": self.conversation.id, "object": "realtime.conversation"},
        )

    def reject_beta(self) -> None:
        """The upgrade carried ``OpenAI-Beta: realtime=v1`` (protocols.md 3.8)."""
        self._error(beta_error())

    def refuse(self, error: ClientError) -> None:
        """The session is refused in-band (a missing or wrong key: ``sim.realtime.auth``):
        its one event is ``error``, then the close ``error.close`` names."""
        self._error(error)

    def receive(self, text: str | bytes, now: float) -> None:
        self.now = now
        if self.close is not None:
            return
        parsed = parse_client_event(text)
        if self.record_frames:
            self.record.frames.append(_client_frame(now, text, parsed))
        if isinstance(parsed, ClientError):
            self._error(parsed)
            return
        self.tick(now)  # anything due comes out before the answer to this frame
        self._dispatch(parsed, now)

    def _dispatch(self, event: ParsedEvent, now: float) -> None:
        data, eid = event.data, event.event_id
        match event.type:
            case "session.update":
                self._session_update(data["session"], eid)
            case "input_audio_buffer.append":
                self._append(data["audio"], now, eid)
            case "input_audio_buffer.commit":
                self._manual_commit(now, eid)
            case "input_audio_buffer.clear":
                self.input.clear()
                self._speech = None
                self.emit("input_audio_buffer.cleared")
            case "response.create":
                self._response_create(data.get("response") or {}, now, eid)
            case "response.cancel":
                self._response_cancel(data.get("response_id"), now, eid)
            case "conversation.item.create":
                self.item_create(data["item"], data.get("previous_item_id"), eid)
            case "conversation.item.truncate":
                self.item_truncate(
                    data["item_id"], data["content_index"], data["audio_end_ms"], now, eid
                )
            case "conversation.item.delete":
                self.item_delete(data["item_id"], eid)
            case "conversation.item.retrieve":
                self.item_retrieve(data["item_id"], eid)
            case "output_audio_buffer.clear":
                self._output_clear(eid)

    # -- session -------------------------------------------------------------------

    def _session_update(self, session: dict[str, Any], eid: str | None) -> None:
        error = self.config.update(session, audio_sent=self.audio_sent)
        if error is not None:
            self._error(_with_id(error, eid))
            return
        self._configure_input()
        self.emit("session.updated", session=self.config.snapshot())

    def _output_clear(self, eid: str | None) -> None:
        # output_audio_buffer.* exist for WebRTC/SIP only (protocols.md 3.3).
        if self.call_id is None:
            self._error(
                ClientError(
                    "invalid_request_error",
                    "output_audio_buffer.clear is only supported for WebRTC and SIP sessions.",
                    event_id=eid,
                )
            )
            return
        last = self.record.responses[-1].response_id if self.record.responses else ""
        self.emit("output_audio_buffer.cleared", response_id=last)


def _with_id(error: ClientError, eid: str | None) -> ClientError:
    return replace(error, event_id=eid)


def _client_frame(now: float, text: str | bytes, parsed: ParsedEvent | ClientError) -> FrameRecord:
    if isinstance(parsed, ParsedEvent):
        return FrameRecord("client", now, parsed.data)
    raw = text.decode(errors="replace") if isinstance(text, bytes) else text
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return FrameRecord("client", now, None, raw)
    if isinstance(data, dict):
        return FrameRecord("client", now, data)
    return FrameRecord("client", now, None, raw)
