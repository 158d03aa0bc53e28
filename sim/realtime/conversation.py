"""The server-side conversation: an ordered list of items (protocols.md 3.3).

Items are kept as the JSON the service shows (``id``, ``object``,
``type``, ``status``, ...). Audio never appears in that JSON except in
``conversation.item.retrieved``, so it is stored beside it: the caller's
committed input audio, or the assistant's generated output (whose length
bounds ``conversation.item.truncate``).
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conversation", "Item"]


@dataclass
class Item:
    data: dict[str, Any]
    audio: bytearray = field(default_factory=bytearray)
    audio_format_bytes_per_ms: int = 8

    @property
    def id(self) -> str:
        item_id: str = self.data["id"]
        return item_id

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // self.audio_format_bytes_per_ms

    def public(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def with_audio(self) -> dict[str, Any]:
        """The item as ``conversation.item.retrieved`` shows it, audio included."""
        data = self.public()
        if self.audio:
            encoded = base64.b64encode(self.audio).decode()
            for part in data.get("content", []):
                if part.get("type") in ("input_audio", "output_audio"):
                    part["audio"] = encoded
        return data


class Conversation:
    def __init__(self, conversation_id: str) -> None:
        self.id = conversation_id
        self._items: list[Item] = []
        self._by_id: dict[str, Item] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def get(self, item_id: str) -> Item | None:
        return self._by_id.get(item_id)

    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert after ``previous_item_id`` ("root" = first; None = last).

        Returns the id of the item now before it, as ``previous_item_id`` of the
        ``conversation.item.added`` event.
        """
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == "root":
            index = 0
        else:
            before = self._by_id[previous_item_id]
            index = self._items.index(before) + 1
        self._items.insert(index, item)
        self._by_id[item.id] = item
        return self._items[index - 1].id if index > 0 else None

    def delete(self, item_id: str) -> bool:
        item = self._by_id.pop(item_id, None)
        if item is None:
            return False
        self._items.remove(item)
        return True

    def function_call(self, call_id: str) -> Item | None:
        for item in self._items:
            if item.data.get("type") == "function_call" and item.data.get("call_id") == call_id:
                return item
        return None

    def input_token_estimate(self, instructions: str) -> tuple[int, int]:
        """(text tokens, audio tokens) the model would read: ~4 chars/token, 10 audio tokens/s."""
        text = len(instructions) // 4
        audio = 0
        for item in self._items:
            if item.audio and item.data.get("role") == "user":
                audio += item.audio_ms // 100
            for part in item.data.get("content", []):
                text += len(part.get("text") or part.get("transcript") or "") // 4
            text += len(item.data.get("arguments", "") + item.data.get("output", "")) // 4
        return text, audio
