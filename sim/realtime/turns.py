"""The caller's side: appended audio, VAD turns, commits, transcription.

Implements the caller-speaks flow of protocols.md 3.5: ``speech_started``
(cancelling the active response when ``interrupt_response``),
``speech_stopped``, ``committed``, the user item added and done, then the
transcript (asynchronously, ``transcription_delay_ms`` later) and, with
``create_response``, the reply. Without VAD the client commits by hand
(at least 100 ms of audio, else ``input_audio_buffer_commit_empty``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sim.realtime.conversation import Item
from sim.realtime.state import SessionState
from sim.realtime.vad import SpeechStarted
from sim.realtime.validation import ClientError

__all__ = ["MAX_APPEND_BYTES", "MIN_COMMIT_MS", "CallerTurns"]

MAX_APPEND_BYTES = 15 * 1024 * 1024
MIN_COMMIT_MS = 100


class CallerTurns(SessionState):
    def _append(self, audio_b64: str, now: float, eid: str | None) -> None:
        try:
            audio = base64.b64decode(audio_b64, validate=True)
        except (binascii.Error, ValueError):
            self._error(
                ClientError(
                    "invalid_value",
                    "Invalid 'audio'. Expected base64-encoded audio bytes.",
                    param="audio",
                    event_id=eid,
                )
            )
            return
        if len(audio) > MAX_APPEND_BYTES:
            self._error(
                ClientError(
                    "invalid_value",
                    "Audio append is too large: at most 15 MiB per event.",
                    param="audio",
                    event_id=eid,
                )
            )
            return
        for vad_event in self.input.append(audio):
            if isinstance(vad_event, SpeechStarted):
                self._speech_started(vad_event.audio_start_ms, now)
            else:
                self._speech_stopped(vad_event.audio_end_ms, now)

    def _speech_started(self, start_ms: int, now: float) -> None:
        item_id = self.new_id("item")
        self._speech = (item_id, start_ms)
        self._idle_token += 1
        self.emit("input_audio_buffer.speech_started", audio_start_ms=start_ms, item_id=item_id)
        td = self.config.turn_detection
        if self.active is not None and td is not None and td.get("interrupt_response", True):
            self._cancel_active(now, "turn_detected")

    def _speech_stopped(self, end_ms: int, now: float) -> None:
        if self._speech is None:
            return
        item_id, start_ms = self._speech
        self._speech = None
        self.emit("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id)
        self._commit(item_id, self.input.take(start_ms, end_ms), now)
        td = self.config.turn_detection
        if td is not None and td.get("create_response", True):
            self._auto_response(now)

    def _manual_commit(self, now: float, eid: str | None) -> None:
        buffered = self.input.buffered_ms
        if buffered < MIN_COMMIT_MS:
            self._error(
                ClientError(
                    "input_audio_buffer_commit_empty",
                    "Error committing input audio buffer: buffer too small. Expected at least"
                    f" {MIN_COMMIT_MS}ms of audio, but buffer only has {buffered:.2f}ms of audio.",
                    event_id=eid,
                )
            )
            return
        item_id = self._speech[0] if self._speech else self.new_id("item")
        self._speech = None
        self._commit(item_id, self.input.take_all(), now)

    def _commit(self, item_id: str, audio: bytes, now: float) -> None:
        previous = self.conversation.last_id()
        self.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        fmt = self.config.input_format
        item = Item(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
            bytearray(audio),
            fmt.bytes_per_ms,
        )
        self.conversation.add(item)
        self.emit("conversation.item.added", previous_item_id=previous, item=item.public())
        self.emit("conversation.item.done", previous_item_id=previous, item=item.public())
        transcription = self.config.transcription
        if transcription is not None:
            text = self.script.caller_transcript(audio, fmt)
            model = str(transcription.get("model") or "whisper-1")
            seconds = len(audio) / fmt.bytes_per_ms / 1000

            def transcribe(t: float) -> None:
                self.transcribed(item, text, model, seconds)

            self._schedule(now + self.transcription_delay_s, transcribe)

    def transcribed(self, item: Item, text: str, model: str, seconds: float) -> None:
        words = text.split()
        deltas = (
            [text]
            if model == "whisper-1"
            else [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        )
        for delta in deltas:
            self.emit(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.id,
                content_index=0,
                delta=delta,
            )
        if model == "whisper-1":
            usage: dict[str, Any] = {"type": "duration", "seconds": round(seconds, 3)}
        else:
            audio_tokens = max(1, round(seconds * 10))
            out_tokens = max(1, len(text) // 4)
            usage = {
                "type": "tokens",
                "total_tokens": audio_tokens + out_tokens,
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": out_tokens,
            }
        item.data["content"][0]["transcript"] = text
        self.emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item.id,
            content_index=0,
            transcript=text,
            usage=usage,
        )
