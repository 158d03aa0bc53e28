"""The emulator's JSONL journal: one line per message it sends, and per notable event.

Kinds: ``http`` (a REST response), ``callback`` (a webhook request and its
answer), ``ws`` (a Media Streams frame sent), ``notification`` (an error or
warning Twilio would put in the debugger), ``call`` (a status change).
Media payloads are left out unless ``payloads=True`` (50 lines a second per
call are plenty). Without a directory the journal is a no-op.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO

__all__ = ["Journal"]


class Journal:
    def __init__(self, log_dir: str | Path | None, payloads: bool = False) -> None:
        self.payloads = payloads
        self.path: Path | None = None
        self._file: IO[str] | None = None
        if log_dir is not None:
            folder = Path(log_dir)
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / f"twilio-emulator-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            self._file = self.path.open("a", encoding="utf-8", buffering=1 << 16)

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def write(self, kind: str, **fields: object) -> None:
        if self._file is None:
            return
        record = {"t": round(time.time(), 6), "kind": kind, **fields}
        self._file.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")

    def ws_sent(self, call_sid: str, text: str) -> None:
        """A frame the phone sent, embedded as is (it is JSON already; no re-parsing)."""
        if self._file is None:
            return
        if not self.payloads and text.startswith('{"event":"media"'):
            start = text.index('"payload":"') + 11
            end = text.index('"', start)
            text = f"{text[:start]}<{end - start} base64 chars>{text[end:]}"
        head = json.dumps({"t": round(time.time(), 6), "kind": "ws", "call_sid": call_sid})
        self._file.write(f'{head[:-1]},"direction":"sent","message":{text}}}\n')

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
