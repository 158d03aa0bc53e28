"""What a call has said so far, to carry into a renewed Realtime session (pure).

A Realtime session lasts at most 60 minutes (protocols.md 3.7); a longer call
moves to a fresh session, which knows nothing of the call. The policy notes
its notices here, and ``recent`` gives the turns back in conversation order:
a caller turn takes its place when speech starts (its transcript may arrive
after the reply began), and of an interrupted reply only the text the caller
heard (``switchboard.transcript.heard_prefix``) is kept, as the service
itself does on truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.call_actions import (
    Action,
    AddUserText,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
)
from switchboard.transcript import heard_prefix

__all__ = ["MAX_TURNS", "ConversationMemory", "Said"]

MAX_TURNS = 400  # far more than a history budget holds; keeps a long call's memory bounded

Said = tuple[str, str]  # (role, text): "user" or "assistant"


@dataclass(slots=True)
class _Turn:
    role: str
    text: str = ""
    cut: tuple[int, int] | None = None  # (heard_ms, generated_ms) of an interrupted reply

    def spoken(self) -> str:
        text = self.text if self.cut is None else heard_prefix(self.text, *self.cut)
        return text.strip()


class ConversationMemory:
    def __init__(self) -> None:
        self._turns: dict[str, _Turn] = {}  # insertion order is conversation order
        self._typed = 0

    def note(self, action: Action) -> None:
        """Take in one of the policy's actions; all but turn notices are ignored."""
        match action:
            case CallerTurnStarted(item_id=item_id):
                self._turn(item_id, "user")
            case CallerTurnTranscribed(item_id=item_id, text=text):
                self._turn(item_id, "user").text = text
            case AgentTurnStarted(item_id=item_id):
                self._turn(item_id, "assistant")
            case AgentTranscriptGrew(item_id=item_id, delta=delta):
                turn = self._turn(item_id, "assistant")
                if turn.cut is None:  # text after the cut was never played (as in the store)
                    turn.text += delta
            case AgentTurnFinished(item_id=item_id, transcript=transcript):
                self._turn(item_id, "assistant").text = transcript
            case AgentTurnInterrupted(item_id=item_id, heard_ms=heard, generated_ms=generated):
                self._turn(item_id, "assistant").cut = (heard, generated)
            case AddUserText(text=text):
                self._typed += 1
                self._turn(f"typed-{self._typed}", "user").text = text
            case _:
                pass

    def recent(self, max_chars: int) -> tuple[Said, ...]:
        """The latest turns that fit in ``max_chars`` of text, oldest first."""
        kept: list[Said] = []
        budget = max_chars
        for turn in reversed(self._turns.values()):
            text = turn.spoken()
            if not text:
                continue
            if len(text) > budget:
                break
            budget -= len(text)
            kept.append((turn.role, text))
        return tuple(reversed(kept))

    def _turn(self, item_id: str, role: str) -> _Turn:
        turn = self._turns.get(item_id)
        if turn is None:
            turn = self._turns[item_id] = _Turn(role)
            if len(self._turns) > MAX_TURNS:
                del self._turns[next(iter(self._turns))]
        return turn
