"""Transcript ordering and the "heard" cut, as pure functions.

Theory of operation. A call's transcript is a list of turns in
*conversation* order, which is not the order the notices arrive in:

- The caller's item id is known at ``input_audio_buffer.speech_started``
  (protocols.md §3.4), long before its transcript
  (``conversation.item.input_audio_transcription.completed``) arrives, which
  may be after the agent's reply to it has begun. The store therefore
  *reserves* a caller turn when speech starts and fills it in later; the
  reservation's arrival sequence is its place.
- Realtime items name their ``previous_item_id``. When a turn says which item
  it follows, that wins over arrival order; a turn whose predecessor is not
  known yet (a caller transcript that arrives without a reservation) is placed
  just before the first turn that says it follows it.

:func:`order_turns` replays the turns in arrival order under those rules.
:func:`heard_prefix` estimates what the caller actually heard of a reply that
was cut off: the transcript prefix proportional to ``heard_ms / generated_ms``,
snapped back to the last whole word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Placed", "heard_prefix", "order_turns"]


@dataclass(frozen=True, slots=True)
class Placed:
    """What ordering needs to know of a turn: its id, arrival rank and predecessor."""

    item_id: str
    arrival: int
    previous_item_id: str | None = None


T = TypeVar("T")


def order_turns(turns: Iterable[T], key: Callable[[T], Placed]) -> list[T]:
    """Return ``turns`` in conversation order; ``key`` gives each its :class:`Placed`.

    Replays insertions by arrival rank:

    1. a turn whose ``previous_item_id`` is already placed goes right after it
       (after any earlier-arrived turns that also follow it, keeping their order);
    2. otherwise, if placed turns say they follow this one, it goes right before
       the first of them (a late caller transcript with no reservation);
    3. otherwise it is appended.
    """
    pending = sorted(((key(t), t) for t in turns), key=lambda pair: pair[0].arrival)
    placed: list[tuple[Placed, T]] = []
    for info, turn in pending:
        placed.insert(_slot(placed, info), (info, turn))
    return [turn for _, turn in placed]


def _slot(placed: Sequence[tuple[Placed, object]], info: Placed) -> int:
    ids = [p.item_id for p, _ in placed]
    if info.previous_item_id is not None and info.previous_item_id in ids:
        at = ids.index(info.previous_item_id) + 1
        while at < len(placed) and placed[at][0].previous_item_id == info.previous_item_id:
            at += 1
        return at
    for at, (p, _) in enumerate(placed):
        if p.previous_item_id == info.item_id:
            return at
    return len(placed)


def heard_prefix(text: str, heard_ms: int, generated_ms: int) -> str:
    """Estimate the part of ``text`` the caller heard before the cut.

    The estimate assumes speech runs at an even rate over the reply: the prefix
    of ``len(text) * heard_ms / generated_ms`` characters, snapped back to the
    end of the last whole word (never into the middle of a word), with trailing
    whitespace dropped. In a script written without spaces (Chinese, Japanese)
    every character is a word of its own: the cut stands at the estimate there,
    and a run such as ``A12345`` in it snaps back only to its own start.
    ``heard_ms >= generated_ms`` means everything was heard; ``heard_ms <= 0`` or
    ``generated_ms <= 0`` means nothing was.
    """
    if heard_ms <= 0 or generated_ms <= 0:
        return ""
    if heard_ms >= generated_ms:
        return text
    cut = len(text) * heard_ms // generated_ms
    if cut < len(text) and not _breaks(text[cut]):
        # The cut falls inside a word: back up to where it began. Never across an
        # unspaced character: one space elsewhere in a Chinese reply must not throw
        # away everything heard since it.
        while cut > 0 and not _breaks(text[cut - 1]):
            cut -= 1
    return text[:cut].rstrip()


# Scripts written without spaces between words, where every character is a word of its
# own: CJK punctuation, kana, Bopomofo, the ideographs and full-width forms. Korean is
# written with spaces. The console's heardPrefix (live_call.js) keeps the same ranges.
UNSPACED_RANGES = (
    (0x3000, 0x30FF),  # CJK symbols and punctuation, Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    # Half-width and full-width forms, but not full-width Latin letters and digits
    # (a full-width OK is a word, as OK is).
    (0xFF00, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFFEF),
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)


def _breaks(char: str) -> bool:
    """A word ends on either side of ``char``: whitespace, or a character of a script
    written without spaces between words."""
    point = ord(char)
    return char.isspace() or any(low <= point <= high for low, high in UNSPACED_RANGES)
