"""The sans-I/O transcript buffer: when agent text is due to be written."""

from __future__ import annotations

from switchboard.store.buffer import TranscriptBuffer

KEY = ("call", "item")


def test_first_delta_is_due_at_once_then_at_most_once_per_interval() -> None:
    buffer = TranscriptBuffer(interval_s=0.25)
    buffer.open(KEY, "", now=10.0)
    assert buffer.grow(KEY, "Hel", now=10.0)
    buffer.written(KEY, "Hel", now=10.0)
    assert not buffer.grow(KEY, "lo", now=10.1)
    assert buffer.deadline(KEY) == 10.25
    assert not buffer.due(KEY, now=10.2)
    assert buffer.due(KEY, now=10.25)
    assert buffer.text(KEY) == "Hello"
    assert buffer.unwritten() == [KEY]


def test_nothing_waits_once_written() -> None:
    buffer = TranscriptBuffer(interval_s=0.25)
    buffer.open(KEY, "kept", now=0.0)
    assert buffer.deadline(KEY) is None
    assert not buffer.due(KEY, now=100.0)
    buffer.grow(KEY, " more", now=1.0)
    buffer.written(KEY, "kept more", now=1.0)
    assert buffer.deadline(KEY) is None
    assert buffer.unwritten() == []


def test_closed_turns_are_remembered_boundedly() -> None:
    buffer = TranscriptBuffer(interval_s=0.25, remember_closed=2)
    buffer.open(KEY, "", now=0.0)
    buffer.grow(KEY, "bye", now=0.0)
    assert buffer.close(KEY) == "bye"
    assert not buffer.is_open(KEY)
    assert buffer.was_closed(KEY)
    assert buffer.close(("call", "never-opened")) is None
    buffer.close(("call", "third"))
    assert not buffer.was_closed(KEY)  # the oldest is forgotten
    assert buffer.deadline(KEY) is None and buffer.text(KEY) is None
    buffer.written(KEY, "ignored", now=1.0)  # a write landing after the close is harmless


def test_reopening_a_closed_turn_forgets_the_close() -> None:
    buffer = TranscriptBuffer(interval_s=0.25)
    buffer.close(KEY)
    buffer.open(KEY, "from disk", now=0.0)
    assert buffer.is_open(KEY) and not buffer.was_closed(KEY)


def test_texts_of_one_call() -> None:
    buffer = TranscriptBuffer(interval_s=0.25)
    buffer.open(("a", "1"), "one", now=0.0)
    buffer.open(("a", "2"), "two", now=0.0)
    buffer.open(("b", "1"), "other call", now=0.0)
    assert buffer.texts_of("a") == {"1": "one", "2": "two"}


def test_a_delta_sent_again_keeps_what_followed_it() -> None:
    buffer = TranscriptBuffer(interval_s=0.25)
    buffer.open(KEY, "", now=0.0)
    buffer.grow(KEY, "a", now=0.0, offset=0)
    buffer.grow(KEY, "b", now=0.0, offset=1)
    buffer.grow(KEY, "a", now=0.0, offset=0)  # the first again: it is there already
    assert buffer.text(KEY) == "ab"
    buffer.grow(KEY, "x", now=0.0, offset=1)  # another at 1: what followed was not this call's
    assert buffer.text(KEY) == "ax"
