"""The model's side: starting, driving, cancelling and ending responses.

One response at a time (``conversation_already_has_active_response``
otherwise); a turn committed while one runs is answered when it ends. The
reply comes from the ``Script``; a scripted tool call whose tool was not
declared is still made but noted in ``SessionRecord.warnings``. After an
audio reply, ``idle_timeout_ms`` (server_vad) arms a timer from
``response.done`` plus the audio's playback time (protocols.md 3.2).
"""

from __future__ import annotations

from typing import Any

from sim.realtime.audio import format_from_dict
from sim.realtime.records import CancellationRecord
from sim.realtime.responses import ResponsePlan, ResponseRun
from sim.realtime.script import SpeechReply, ToolReply
from sim.realtime.state import SessionState
from sim.realtime.validation import ClientError

__all__ = ["ReplyControl"]


class ReplyControl(SessionState):
    def _auto_response(self, now: float) -> None:
        if self.active is not None:
            self._pending_auto = True  # the service answers the turn once the reply ends
            return
        self._start_response({}, now)

    def _response_create(self, params: dict[str, Any], now: float, eid: str | None) -> None:
        if self.active is not None:
            rid = self.active.plan.response_id
            self._error(
                ClientError(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: {rid}."
                    " Wait until the response is finished before creating a new one.",
                    event_id=eid,
                )
            )
            return
        self._start_response(params, now)

    def _start_response(self, params: dict[str, Any], now: float) -> None:
        session = self.config.data
        modalities = tuple(params.get("output_modalities") or session["output_modalities"])
        audio_params = (params.get("audio") or {}).get("output") or {}
        out_format = self.config.output_format
        if audio_params.get("format") is not None:
            out_format = format_from_dict(audio_params["format"])
        voice = audio_params.get("voice") or session["audio"]["output"]["voice"]
        reply = self.script.next_reply()
        if isinstance(reply, ToolReply):
            self._check_tool(reply.name, params)
        audio = b""
        if isinstance(reply, SpeechReply) and "audio" in modalities:
            audio = self.clips.encode(reply.speech.mulaw, out_format)
        instructions = params.get("instructions", session.get("instructions") or "")
        text_in, audio_in = self.conversation.input_token_estimate(instructions)
        cached = (min(self._last_input_tokens, text_in + audio_in) // 64) * 64
        self._last_input_tokens = text_in + audio_in
        in_band = params.get("conversation", "auto") != "none"
        plan = ResponsePlan(
            response_id=self.new_id("resp"),
            conversation_id=self.conversation.id if in_band else None,
            reply=reply,
            modalities=modalities,
            out_format=out_format,
            voice=voice,
            audio=audio,
            max_output_tokens=params.get("max_output_tokens", session["max_output_tokens"]),
            metadata=params.get("metadata"),
            input_tokens=(text_in, audio_in, cached if text_in + audio_in >= 1024 else 0),
        )
        run = ResponseRun(plan, self, self.pacing, now)
        self.active = run
        self._idle_token += 1
        self.record.responses.append(run.record)
        self._schedule(run.start(now), lambda t: self._drive(run, t))

    def _check_tool(self, name: str, params: dict[str, Any]) -> None:
        tools = params.get("tools", self.config.data.get("tools") or [])
        choice = params.get("tool_choice", self.config.data.get("tool_choice"))
        if not any(t.get("name") == name for t in tools):
            self.record.warnings.append(f"scripted tool call {name!r} but no such tool is declared")
        elif choice == "none":
            self.record.warnings.append(f"scripted tool call {name!r} but tool_choice is 'none'")

    def _drive(self, run: ResponseRun, now: float) -> None:
        if run is not self.active:
            return  # cancelled meanwhile
        due = run.step(now)
        if due is None:
            self._finished(run, now)
        else:
            self._schedule(due, lambda t: self._drive(run, t))

    def _finished(self, run: ResponseRun, now: float) -> None:
        self.active = None
        run.record.done_at = now
        td = self.config.turn_detection
        idle_ms = td.get("idle_timeout_ms") if td is not None else None
        if idle_ms and run.record.status == "completed" and not self.input.speaking:
            self._idle_token += 1
            token = self._idle_token
            due = now + (run.record.audio_ms_sent + idle_ms) / 1000

            def idle(t: float) -> None:
                if token == self._idle_token:
                    self._idle_timeout(t)

            self._schedule(due, idle)
        if self._pending_auto:
            self._pending_auto = False
            self._start_response({}, now)

    def _idle_timeout(self, now: float) -> None:
        item_id = self.new_id("item")
        self.emit(
            "input_audio_buffer.timeout_triggered",
            audio_start_ms=int(self.input.start_ms),
            audio_end_ms=int(self.input.pos_ms),
            item_id=item_id,
        )
        self._commit(item_id, self.input.take_all(), now)
        self._start_response({}, now)

    def _response_cancel(self, response_id: str | None, now: float, eid: str | None) -> None:
        if self.active is None or response_id not in (None, self.active.plan.response_id):
            self._error(
                ClientError(
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found",
                    event_id=eid,
                )
            )
            return
        self._cancel_active(now, "client_cancelled")

    def _cancel_active(self, now: float, reason: str) -> None:
        run = self.active
        if run is None:
            return
        run.cancel(now, reason)
        self.record.cancellations.append(
            CancellationRecord(now, run.plan.response_id, reason, run.record.audio_ms_sent)
        )
        self._finished(run, now)
