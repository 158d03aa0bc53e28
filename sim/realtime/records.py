"""What the emulator remembers about each session, for tests to assert on.

``SessionRecord`` holds every frame both ways (parsed, with loop timestamps),
and the protocol facts tests care about: truncations (with the audio length
generated for the item, so a bridge's offsets can be checked), cancellations,
responses, errors sent and server frames that failed validation.

``Waiters`` turns "something changed" notifications into awaitable
predicates, so tests wait for events instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CancellationRecord",
    "FrameRecord",
    "ResponseRecord",
    "SessionRecord",
    "TruncationRecord",
    "Waiters",
]


@dataclass(frozen=True, slots=True)
class FrameRecord:
    direction: Literal["client", "server"]
    t: float
    event: dict[str, Any] | None
    raw: str | None = None  # only for client frames that were not JSON objects

    @property
    def type(self) -> str | None:
        return None if self.event is None else self.event.get("type")


@dataclass(frozen=True, slots=True)
class TruncationRecord:
    t: float
    item_id: str
    content_index: int
    audio_end_ms: int
    audio_ms_generated: int | None  # None when the item does not exist
    accepted: bool
    error_code: str | None = None
    transcript_before: str | None = None
    transcript_after: str | None = None


@dataclass(frozen=True, slots=True)
class CancellationRecord:
    t: float
    response_id: str
    reason: str  # turn_detected | client_cancelled
    audio_ms_sent: int


@dataclass(slots=True)
class ResponseRecord:
    response_id: str
    kind: str  # audio | text | function_call
    created_at: float
    item_id: str | None = None
    status: str = "in_progress"
    reason: str | None = None
    text: str = ""
    audio_ms_total: int = 0
    audio_ms_sent: int = 0
    first_audio_at: float | None = None
    done_at: float | None = None
    tool_name: str | None = None
    call_id: str | None = None
    arguments: str | None = None


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    model: str | None
    call_id: str | None
    opened_at: float
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[FrameRecord] = field(default_factory=list)
    truncations: list[TruncationRecord] = field(default_factory=list)
    cancellations: list[CancellationRecord] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None

    def server_events(self, type: str | None = None) -> list[dict[str, Any]]:
        return [
            f.event
            for f in self.frames
            if f.direction == "server" and f.event is not None and (type is None or f.type == type)
        ]

    def client_events(self, type: str | None = None) -> list[dict[str, Any]]:
        return [
            f.event
            for f in self.frames
            if f.direction == "client" and f.event is not None and (type is None or f.type == type)
        ]

    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.server_events("error")]

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


class Waiters:
    """Futures resolved when a predicate becomes true after a ``notify``."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []

    def notify(self) -> None:
        if not self._pending:
            return
        still = []
        for predicate, future in self._pending:
            if future.done():
                continue
            try:
                value = predicate()
            except Exception as exc:  # surface a broken predicate to the waiting test
                future.set_exception(exc)
                continue
            if value:
                future.set_result(value)
            else:
                still.append((predicate, future))
        self._pending = still

    async def wait(self, predicate: Callable[[], Any], timeout: float | None = 10.0) -> Any:
        """Return ``predicate()``'s first truthy value; raise TimeoutError after ``timeout`` s."""
        value = predicate()
        if value:
            return value
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((predicate, future))
        return await asyncio.wait_for(future, timeout)
