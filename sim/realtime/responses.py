"""One model response, streamed on a schedule (protocols.md 3.5).

A ``ResponseRun`` is created by the session with everything decided up
front (reply, formats, ids) and then driven by time: ``start(now)`` emits
``response.created`` and ``rate_limits.updated`` and returns when it next
wants to run; each ``step(now)`` emits whatever has fallen due and returns
the next due time, or None once ``response.done`` is out.

Timing (``Pacing``): the output item opens at half the time to first audio;
the first audio delta comes at ``first_audio_ms``; each delta carries
``chunk_ms`` of audio and the next one follows ``chunk_ms / speed`` later,
so audio is generated ``speed`` times faster than real time, as the service
does. Transcript deltas (one word each) go out just before the audio that
speaks them. ``cancel`` closes the item early (``incomplete``) and ends with
``response.done{status:"cancelled"}``. ``truncate`` (the client's
``conversation.item.truncate`` while the item streams) freezes the item at the
cut: the response streams on, but nothing more is added to the item, and its
``output_item.done`` / ``response.done`` show it as cut.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, Protocol

from sim.realtime.audio import AudioFormat
from sim.realtime.conversation import Conversation, Item
from sim.realtime.records import ResponseRecord
from sim.realtime.script import Reply, SpeechReply, ToolReply

__all__ = ["Pacing", "ResponseHost", "ResponsePlan", "ResponseRun"]

AUDIO_TOKENS_PER_S = 20
RATE_LIMITS = (("requests", 5000), ("tokens", 400_000))


@dataclass(frozen=True, slots=True)
class Pacing:
    first_audio_ms: int = 300
    chunk_ms: int = 100
    speed: float = 5.0
    text_word_ms: int = 20


class ResponseHost(Protocol):
    conversation: Conversation

    def emit(self, type: str, **fields: Any) -> None: ...
    def new_id(self, prefix: str) -> str: ...
    def delta_sent(self, lateness_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    response_id: str
    conversation_id: str | None  # None: out of band (conversation "none")
    reply: Reply
    modalities: tuple[str, ...]
    out_format: AudioFormat
    voice: object
    audio: bytes  # the whole reply, already in out_format
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    input_tokens: tuple[int, int, int]  # text, audio, cached


class ResponseRun:
    def __init__(self, plan: ResponsePlan, host: ResponseHost, pacing: Pacing, now: float) -> None:
        self.plan = plan
        self.host = host
        self.pacing = pacing
        self.t0 = now
        self.item: Item | None = None
        self.done = False
        self._status = "completed"
        self._details: dict[str, Any] | None = None
        reply = plan.reply
        self.kind = (
            "function_call"
            if isinstance(reply, ToolReply)
            else ("audio" if "audio" in plan.modalities else "text")
        )
        text = reply.speech.text if isinstance(reply, SpeechReply) else ""
        self.words = [w if i == 0 else f" {w}" for i, w in enumerate(text.split())]
        self.audio = plan.audio if self.kind == "audio" else b""
        self._limit_tokens(text)
        bpm = plan.out_format.bytes_per_ms
        self.chunk = max(pacing.chunk_ms * bpm, plan.out_format.sample_bytes)
        self.sent = 0  # audio bytes sent
        self.words_sent = 0
        self.cut = False  # the item was truncated: later output is not added to it
        self.heard = ""  # its words heard when it was cut (for the record)
        self._step_no = 0
        # Word i is spoken from byte word_at[i] (spread by characters over the audio).
        total_chars = sum(len(w) for w in self.words) or 1
        self.word_at, acc = [], 0
        for w in self.words:
            self.word_at.append(len(self.audio) * acc // total_chars)
            acc += len(w)
        self.record = ResponseRecord(plan.response_id, self.kind, now)
        self.record.audio_ms_total = len(self.audio) // bpm
        if isinstance(reply, ToolReply):
            self.record.tool_name = reply.name
            self.record.arguments = reply.arguments_json

    # -- limits ------------------------------------------------------------------

    def _limit_tokens(self, text: str) -> None:
        budget = self.plan.max_output_tokens
        if not isinstance(budget, int) or self.kind == "function_call":
            return
        if self.kind == "text":
            keep, used = 0, 0
            for w in self.words:
                used += math.ceil(len(w) / 4)
                if used > budget:
                    break
                keep += 1
            if keep < len(self.words):
                self.words = self.words[:keep]
                self._status, self._details = "incomplete", _incomplete()
            return
        audio_budget = budget - math.ceil(len(text) / 4)
        allowed = (
            max(0, audio_budget) * 1000 // AUDIO_TOKENS_PER_S * self.plan.out_format.bytes_per_ms
        )
        if allowed < len(self.audio):
            ratio = allowed / len(self.audio) if self.audio else 0
            self.audio = self.audio[: allowed - allowed % self.plan.out_format.sample_bytes]
            self.words = self.words[: int(len(self.words) * ratio)]
            self._status, self._details = "incomplete", _incomplete()

    # -- driving -------------------------------------------------------------------

    def start(self, now: float) -> float:
        self.host.emit("response.created", response=self._response("in_progress", [], None))
        self.host.emit(
            "rate_limits.updated",
            rate_limits=[
                {"name": name, "limit": limit, "remaining": limit - 1, "reset_seconds": 60}
                for name, limit in RATE_LIMITS
            ],
        )
        return self.t0 + self.pacing.first_audio_ms / 2000

    def step(self, now: float) -> float | None:
        """Emit everything due by ``now``; the next due time, or None when finished."""
        while not self.done:
            due = self._next_due()
            if due > now:
                return due
            if self.item is None:
                self._open_item()
                if self.kind == "function_call":
                    self._finish_tool()
            elif self.kind == "audio":
                self._audio_step(now, due)
            else:
                self._text_step()
        return None

    def _next_due(self) -> float:
        if self.item is None:
            return self.t0 + self.pacing.first_audio_ms / 2000
        first = self.t0 + self.pacing.first_audio_ms / 1000
        if self.kind == "audio":
            return first + self._step_no * self.pacing.chunk_ms / 1000 / self.pacing.speed
        return first + self._step_no * self.pacing.text_word_ms / 1000 / self.pacing.speed

    def _ids(self) -> dict[str, Any]:
        assert self.item is not None
        return {"response_id": self.plan.response_id, "item_id": self.item.id, "output_index": 0}

    def _open_item(self) -> None:
        reply = self.plan.reply
        item_id = self.host.new_id("item")
        self.record.item_id = item_id
        if isinstance(reply, ToolReply):
            call_id = self.host.new_id("call")
            self.record.call_id = call_id
            data: dict[str, Any] = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": reply.name,
                "call_id": call_id,
                "arguments": "",
            }
        else:
            data = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        self.item = Item(data, audio_format_bytes_per_ms=self.plan.out_format.bytes_per_ms)
        self.host.emit(
            "response.output_item.added",
            response_id=self.plan.response_id,
            output_index=0,
            item=self.item.public(),
        )
        if self.plan.conversation_id is not None:
            previous = self.host.conversation.add(self.item)
            self.host.emit(
                "conversation.item.added", previous_item_id=previous, item=self.item.public()
            )
        if self.kind != "function_call":
            part = (
                {"type": "audio", "transcript": ""}
                if self.kind == "audio"
                else {"type": "text", "text": ""}
            )
            self.host.emit("response.content_part.added", **self._ids(), content_index=0, part=part)

    def _audio_step(self, now: float, due: float) -> None:
        end = min(self.sent + self.chunk, len(self.audio))
        ids = self._ids()
        while self.words_sent < len(self.words) and self.word_at[self.words_sent] < end:
            self.host.emit(
                "response.output_audio_transcript.delta",
                **ids,
                content_index=0,
                delta=self.words[self.words_sent],
            )
            self.words_sent += 1
        if end > self.sent:
            chunk = self.audio[self.sent : end]
            self.host.emit(
                "response.output_audio.delta",
                **ids,
                content_index=0,
                delta=base64.b64encode(chunk).decode(),
            )
            assert self.item is not None
            if not self.cut:
                self.item.audio += chunk
            self.sent = end
            self.host.delta_sent(now - due)
            if self.record.first_audio_at is None:
                self.record.first_audio_at = now
        self._step_no += 1
        if self.sent >= len(self.audio):
            self._finish(self._status, self._details)

    def _text_step(self) -> None:
        if self.words_sent < len(self.words):
            self.host.emit(
                "response.output_text.delta",
                **self._ids(),
                content_index=0,
                delta=self.words[self.words_sent],
            )
            self.words_sent += 1
        self._step_no += 1
        if self.words_sent >= len(self.words):
            self._finish(self._status, self._details)

    def _finish_tool(self) -> None:
        assert self.item is not None and isinstance(self.plan.reply, ToolReply)
        args = self.plan.reply.arguments_json
        ids = {**self._ids(), "call_id": self.item.data["call_id"]}
        step = max(1, len(args) // 3)
        for i in range(0, len(args), step):
            self.host.emit(
                "response.function_call_arguments.delta", **ids, delta=args[i : i + step]
            )
        self.host.emit(
            "response.function_call_arguments.done",
            **ids,
            name=self.plan.reply.name,
            arguments=args,
        )
        self.item.data["arguments"] = args
        self._finish("completed", None)

    def truncate(self, audio_end_ms: int) -> tuple[str, str]:
        """Cut the streaming item at ``audio_end_ms`` (protocols.md 3.6, 5.2).

        The caller bounds ``audio_end_ms`` by the item's audio. The item keeps that
        audio and, as a finished item cut, no transcript. Generation goes on (clients
        drop a cut item's deltas, protocols.md 6.8), but is not added to the item.
        Returns the words sent so far and those heard (for the record).
        """
        assert self.item is not None and self.kind == "audio"
        before = self.heard if self.cut else "".join(self.words[: self.words_sent])
        end = audio_end_ms * self.plan.out_format.bytes_per_ms
        del self.item.audio[end:]
        heard = sum(1 for at in self.word_at[: self.words_sent] if at < end)
        self.heard = "".join(self.words[:heard])
        self.item.data["content"] = [{"type": "output_audio", "transcript": ""}]
        self.cut = True
        return str(before), self.heard

    def cancel(self, now: float, reason: str) -> None:
        if not self.done:
            self._finish("cancelled", {"type": "cancelled", "reason": reason})

    def _finish(self, status: str, details: dict[str, Any] | None) -> None:
        self.done = True
        spoken = "".join(self.words[: self.words_sent])
        output: list[dict[str, Any]] = []
        item = self.item
        if item is not None:
            ids = self._ids()
            if self.kind == "audio":
                self.host.emit("response.output_audio.done", **ids, content_index=0)
                self.host.emit(
                    "response.output_audio_transcript.done",
                    **ids,
                    content_index=0,
                    transcript=spoken,
                )
                if not self.cut:  # else it keeps what truncate left
                    item.data["content"] = [{"type": "output_audio", "transcript": spoken}]
                kept = item.data["content"][0]["transcript"]
                part: dict[str, Any] = {"type": "audio", "transcript": kept}
            elif self.kind == "text":
                self.host.emit("response.output_text.done", **ids, content_index=0, text=spoken)
                part = {"type": "text", "text": spoken}
                item.data["content"] = [{"type": "output_text", "text": spoken}]
            if self.kind != "function_call":
                self.host.emit("response.content_part.done", **ids, content_index=0, part=part)
            item.data["status"] = "completed" if status == "completed" else "incomplete"
            self.host.emit(
                "response.output_item.done",
                response_id=self.plan.response_id,
                output_index=0,
                item=item.public(),
            )
            if self.plan.conversation_id is not None:
                self.host.emit("conversation.item.done", item=item.public())
            output.append(item.public())
        self.record.status = status
        self.record.reason = details.get("reason") if details else None
        self.record.text = spoken if self.kind != "function_call" else ""
        self.record.audio_ms_sent = self.sent // self.plan.out_format.bytes_per_ms
        self.host.emit("response.done", response=self._response(status, output, details, spoken))

    # -- shapes --------------------------------------------------------------------

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        details: dict[str, Any] | None,
        spoken: str | None = None,
    ) -> dict[str, Any]:
        plan = self.plan
        return {
            "object": "realtime.response",
            "id": plan.response_id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": plan.conversation_id,
            "output_modalities": list(plan.modalities),
            "max_output_tokens": plan.max_output_tokens,
            "audio": {"output": {"format": plan.out_format.to_dict(), "voice": plan.voice}},
            "usage": None if spoken is None else self._usage(spoken),
            "metadata": plan.metadata,
        }

    def _usage(self, spoken: str) -> dict[str, Any]:
        text_in, audio_in, cached = self.plan.input_tokens
        if self.kind == "function_call":
            text_out = 5 + len(self.record.arguments or "") // 4
        else:
            text_out = math.ceil(len(spoken) / 4)
        audio_out = math.ceil(
            self.sent / self.plan.out_format.bytes_per_ms * AUDIO_TOKENS_PER_S / 1000
        )
        total_in, total_out = text_in + audio_in, text_out + audio_out
        cached_text = min(cached, text_in)
        return {
            "total_tokens": total_in + total_out,
            "input_tokens": total_in,
            "output_tokens": total_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": cached,
                "cached_tokens_details": {
                    "text_tokens": cached_text,
                    "audio_tokens": cached - cached_text,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _incomplete() -> dict[str, Any]:
    return {"type": "incomplete", "reason": "max_output_tokens"}
