"""The state every part of a session shares, and its plumbing.

``SessionState`` owns the outbox (server events with ``event_id``s), the
timer heap behind ``next_deadline``/``tick``, ids, the configuration, the
conversation, the input buffer and the active response. The commands live
in mixins (``turns``, ``replies``, ``items``) assembled by
``session.RealtimeSession``; a mixin reaches another one only through the
stubs declared at the end of this class.
"""

from __future__ import annotations

import heapq
import random
import string
from collections.abc import Callable
from typing import Any

from sim.realtime.audio import ClipLibrary
from sim.realtime.config import SessionConfig, default_session
from sim.realtime.conversation import Conversation
from sim.realtime.input_buffer import InputBuffer
from sim.realtime.records import FrameRecord, SessionRecord
from sim.realtime.responses import Pacing, ResponseRun
from sim.realtime.script import Script
from sim.realtime.validation import ClientError

__all__ = ["SessionState"]

_ALPHABET = string.ascii_letters + string.digits


class SessionState:
    def __init__(
        self,
        *,
        now: float,
        wall: float,
        script: Script,
        clips: ClipLibrary,
        model: str | None = "gpt-realtime",
        call_id: str | None = None,
        pacing: Pacing | None = None,
        rng: random.Random | None = None,
        max_session_s: float = 3600.0,
        transcription_delay_ms: int = 100,
        record: SessionRecord | None = None,
        record_frames: bool = True,
        on_delta: Callable[[float], None] | None = None,
    ) -> None:
        self._rng = rng or random.Random()
        self.session_id = self.new_id("sess")
        self.conversation = Conversation(self.new_id("conv"))
        self.config = SessionConfig(
            default_session(self.session_id, model or "gpt-realtime", int(wall + max_session_s))
        )
        self.script = script
        self.clips = clips
        self.pacing = pacing or Pacing()
        self.call_id = call_id
        self.transcription_delay_s = transcription_delay_ms / 1000
        self.record = record or SessionRecord(self.session_id, model, call_id, now)
        self.record_frames = record_frames
        self.on_delta = on_delta
        self.close: tuple[int, str] | None = None
        self.active: ResponseRun | None = None
        self.audio_sent = False
        self.now = now
        self._out: list[dict[str, Any]] = []
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = 0
        self._pending_auto = False
        self._speech: tuple[str, int] | None = None
        self._idle_token = 0
        self._last_input_tokens = 0
        self.input = InputBuffer()
        self._configure_input()
        minutes = round(max_session_s / 60)
        self._expired = f"Your session hit the maximum duration of {minutes} minutes."
        self._schedule(now + max_session_s, self._on_expired)

    @property
    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers and self.close is None else None

    def outgoing(self) -> list[dict[str, Any]]:
        out, self._out = self._out, []
        return out

    def tick(self, now: float) -> None:
        self.now = now
        while self._timers and self._timers[0][0] <= now and self.close is None:
            _, _, callback = heapq.heappop(self._timers)
            callback(now)

    # -- ResponseHost

    def emit(self, type: str, **fields: Any) -> None:
        event = {"type": type, "event_id": self.new_id("event"), **fields}
        self._out.append(event)
        if self.record_frames:
            self.record.frames.append(FrameRecord("server", self.now, event))

    def new_id(self, prefix: str) -> str:
        length = 16 if prefix == "call" else 21
        return f"{prefix}_" + "".join(self._rng.choices(_ALPHABET, k=length))

    def delta_sent(self, lateness_s: float) -> None:
        self.audio_sent = True
        if self.on_delta is not None:
            self.on_delta(lateness_s)

    # -- plumbing

    def _schedule(self, due: float, callback: Callable[[float], None]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (due, self._seq, callback))

    def _error(self, error: ClientError) -> None:
        self.emit("error", error=error.to_error())
        if error.close is not None:
            self.close = error.close

    def _configure_input(self) -> None:
        self.input.configure(self.config.input_format, self.config.vad_settings())
        if not self.input.speaking:
            self._speech = None

    def _on_expired(self, now: float) -> None:
        self._error(ClientError("session_expired", self._expired, close=(1001, self._expired)))

    # -- implemented by the mixins -------------------------------------------------

    def _commit(self, item_id: str, audio: bytes, now: float) -> None:
        raise NotImplementedError

    def _start_response(self, params: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    def _auto_response(self, now: float) -> None:
        raise NotImplementedError

    def _cancel_active(self, now: float, reason: str) -> None:
        raise NotImplementedError
