"""``conversation.item.*`` commands of a session (protocols.md 3.3, 3.6).

A mixin of ``RealtimeSession``: create (with the service's checks: assistant
items cannot carry audio, a ``function_call_output`` needs a matching
``function_call``), truncate (only assistant audio, never past the audio
generated for the item; the transcript is cut to the part heard, and an item
still streaming is frozen at the cut, see ``ResponseRun.truncate``), delete
and retrieve.

The exact error codes for unknown ids on delete/retrieve and for a bad
``previous_item_id`` are not documented; the emulator uses codes in the
style of the known ``item_truncate_invalid_item_id``.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

from sim.realtime.conversation import Item
from sim.realtime.records import TruncationRecord
from sim.realtime.state import SessionState
from sim.realtime.validation import ClientError

__all__ = ["ItemCommands", "heard_transcript"]


def heard_transcript(transcript: str, heard_ms: int, total_ms: int) -> str:
    """The words whose start lies within the first ``heard_ms`` (spread by characters)."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return transcript
    words = transcript.split()
    total = sum(len(w) for w in words) or 1
    kept, acc = [], 0
    for word in words:
        if acc * total_ms >= heard_ms * total:
            break
        kept.append(word)
        acc += len(word)
    return " ".join(kept)


def _cut(item: Item, audio_end_ms: int) -> tuple[str, str | None]:
    """Cut a finished item's audio at ``audio_end_ms`` and delete its transcript, as the
    service does (protocols.md 3.6: no unheard text stays in context); the transcript
    before, and the words heard (the record's, for tests: the item keeps none)."""
    content = item.data.get("content") or []
    before, heard = "", None
    if content and content[0].get("type") == "output_audio":
        before = content[0].get("transcript") or ""
        heard = heard_transcript(before, audio_end_ms, item.audio_ms)
        content[0]["transcript"] = ""
    del item.audio[audio_end_ms * item.audio_format_bytes_per_ms :]
    return before, heard


class ItemCommands(SessionState):
    def item_create(self, raw: dict[str, Any], previous: str | None, eid: str | None) -> None:
        def fail(code: str, message: str, param: str | None) -> None:
            self._error(ClientError(code, message, param=param, event_id=eid))

        if previous not in (None, "root") and self.conversation.get(str(previous)) is None:
            fail(
                "previous_item_not_found",
                f"Previous item with id '{previous}' does not exist.",
                "previous_item_id",
            )
            return
        item_id = raw.get("id") or self.new_id("item")
        if self.conversation.get(item_id) is not None:
            fail("item_duplicate_id", f"Item with id '{item_id}' already exists.", "item.id")
            return
        data = copy.deepcopy(raw)
        data.update(id=item_id, object="realtime.item")
        data.setdefault("status", "completed")
        audio = bytearray()
        kind, role = data.get("type"), data.get("role")
        if kind == "message":
            for i, part in enumerate(data.get("content", [])):
                ptype = part.get("type")
                if role == "assistant" and ptype == "output_audio":
                    # Assistant audio cannot be created; the service asks for text instead.
                    fail(
                        "missing_required_parameter",
                        f"Missing required parameter: 'item.content[{i}].text'.",
                        f"item.content[{i}].text",
                    )
                    return
                if ptype in ("input_text", "output_text") and part.get("text") is None:
                    fail(
                        "missing_required_parameter",
                        f"Missing required parameter: 'item.content[{i}].text'.",
                        f"item.content[{i}].text",
                    )
                    return
                if ptype == "input_audio" and part.get("audio") is not None:
                    try:
                        audio += base64.b64decode(part.pop("audio"), validate=True)
                    except (binascii.Error, ValueError):
                        fail(
                            "invalid_value",
                            "Invalid 'audio'. Expected base64-encoded audio bytes.",
                            f"item.content[{i}].audio",
                        )
                        return
                    part.setdefault("transcript", None)
        elif kind == "function_call_output":
            call_id = data.get("call_id")
            if self.conversation.function_call(str(call_id)) is None:
                fail(
                    "invalid_value",
                    f"No tool call found for function call output with call_id {call_id}.",
                    "item.call_id",
                )
                return
        elif kind == "function_call":
            data.setdefault("call_id", self.new_id("call"))
        item = Item(data, audio)
        if kind == "message" and role == "assistant":
            self.script.assistant_turn_given()
        before = self.conversation.add(item, previous)
        self.emit("conversation.item.added", previous_item_id=before, item=item.public())
        self.emit("conversation.item.done", previous_item_id=before, item=item.public())

    def item_truncate(
        self, item_id: str, content_index: int, audio_end_ms: int, now: float, eid: str | None
    ) -> None:
        item = self.conversation.get(item_id)

        def fail(code: str, message: str, param: str | None) -> None:
            self.record.truncations.append(
                TruncationRecord(
                    now,
                    item_id,
                    content_index,
                    audio_end_ms,
                    None if item is None else item.audio_ms,
                    accepted=False,
                    error_code=code,
                )
            )
            self._error(ClientError(code, message, param=param, event_id=eid))

        if item is None:
            fail(
                "item_truncate_invalid_item_id",
                f"Error truncating item: the item with id '{item_id}' does not exist.",
                "item_id",
            )
            return
        # Only the assistant's audio can be cut, and only once some was generated.
        is_audio = item.data.get("role") == "assistant" and bool(item.audio)
        if not is_audio:
            fail(
                "unsupported_content_type",
                "Only model output audio messages can be truncated",
                "item_id",
            )
            return
        if content_index != 0:
            fail("invalid_value", f"Invalid content_index: {content_index}.", "content_index")
            return
        if audio_end_ms < 0 or audio_end_ms > item.audio_ms:
            fail(
                "invalid_value",
                f"Audio content of {item.audio_ms}ms is already shorter than {audio_end_ms}ms",
                "audio_end_ms",
            )
            return
        generated = item.audio_ms
        run = self.active
        after: str | None
        if run is not None and run.item is item and not run.done:
            # Still streaming: its content is not written yet; the run cuts and freezes it.
            before, after = run.truncate(audio_end_ms)
        else:
            before, after = _cut(item, audio_end_ms)
        self.record.truncations.append(
            TruncationRecord(
                now, item_id, content_index, audio_end_ms, generated, True, None, before, after
            )
        )
        self.emit(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    def item_delete(self, item_id: str, eid: str | None) -> None:
        if not self.conversation.delete(item_id):
            self._error(
                ClientError(
                    "item_delete_invalid_item_id",
                    f"Error deleting item: the item with id '{item_id}' does not exist.",
                    param="item_id",
                    event_id=eid,
                )
            )
            return
        self.emit("conversation.item.deleted", item_id=item_id)

    def item_retrieve(self, item_id: str, eid: str | None) -> None:
        item = self.conversation.get(item_id)
        if item is None:
            self._error(
                ClientError(
                    "item_retrieve_invalid_item_id",
                    f"Error retrieving item: the item with id '{item_id}' does not exist.",
                    param="item_id",
                    event_id=eid,
                )
            )
            return
        self.emit("conversation.item.retrieved", item=item.with_audio())
