"""Pure transcript logic: conversation order and the heard-text estimate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.transcript import Placed, heard_prefix, order_turns


def ids(placed: list[Placed]) -> list[str]:
    return [p.item_id for p in order_turns(placed, lambda p: p)]


@pytest.mark.parametrize(
    ("turns", "expected"),
    [
        pytest.param([], [], id="empty"),
        pytest.param(
            [Placed("a", 1), Placed("b", 2, "a"), Placed("c", 3), Placed("d", 4, "c")],
            ["a", "b", "c", "d"],
            id="arrival order when it agrees",
        ),
        pytest.param(
            # The caller's transcript arrives (unreserved) after the agent's reply to it.
            [Placed("b", 1, "a"), Placed("a", 2)],
            ["a", "b"],
            id="late unreserved caller turn goes before the reply that follows it",
        ),
        pytest.param(
            [Placed("a", 1), Placed("b", 2, "a"), Placed("d", 3, "c"), Placed("c", 4)],
            ["a", "b", "c", "d"],
            id="late caller turn in the middle",
        ),
        pytest.param(
            [Placed("a", 1), Placed("c", 2), Placed("b", 3, "a")],
            ["a", "b", "c"],
            id="an item inserted after an earlier one",
        ),
        pytest.param(
            [Placed("a", 1), Placed("b", 2, "a"), Placed("c", 3, "a")],
            ["a", "b", "c"],
            id="two items after the same one keep their arrival order",
        ),
        pytest.param(
            [Placed("x", 2, "missing"), Placed("y", 1)],
            ["y", "x"],
            id="an unknown predecessor falls back to arrival order",
        ),
    ],
)
def test_order_turns(turns: list[Placed], expected: list[str]) -> None:
    assert ids(turns) == expected


def test_order_turns_sorts_by_arrival_not_input_order() -> None:
    turns = [Placed("c", 3), Placed("a", 1), Placed("b", 2)]
    assert ids(turns) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("text", "heard_ms", "generated_ms", "expected"),
    [
        ("Hello there friend", 500, 1000, "Hello"),  # cut at 9 = inside "there"
        ("Hello there friend", 1000, 1000, "Hello there friend"),
        ("Hello there friend", 2000, 1000, "Hello there friend"),
        ("Hello there friend", 0, 1000, ""),
        ("Hello there friend", 100, 0, ""),
        ("Hello there friend", 334, 1000, "Hello"),  # cut at 6 = just after the space
        ("Hello there friend", 300, 1000, "Hello"),  # cut at 5 = on the space
        ("Hello there friend", 250, 1000, ""),  # cut at 4 = inside the first word
        ("Yes, sure. Let me check.", 500, 1000, "Yes, sure."),
        ("", 500, 1000, ""),
    ],
)
def test_heard_prefix(text: str, heard_ms: int, generated_ms: int, expected: str) -> None:
    assert heard_prefix(text, heard_ms, generated_ms) == expected


words = st.lists(st.text(alphabet="abcxyz,.", min_size=1, max_size=8), max_size=12)


@given(words, st.integers(0, 3000), st.integers(1, 3000))
def test_heard_prefix_is_whole_words_of_the_text(
    parts: list[str], heard_ms: int, generated_ms: int
) -> None:
    text = " ".join(parts)
    heard = heard_prefix(text, heard_ms, generated_ms)
    assert text.startswith(heard)
    assert len(heard) <= max(len(text) * heard_ms // generated_ms, 0) or heard_ms >= generated_ms
    # It ends at a word boundary: the whole text, empty, or followed by a space.
    assert heard in ("", text) or text[len(heard)] == " "
    assert heard == heard.rstrip()


@given(words, st.integers(0, 3000), st.integers(0, 3000), st.integers(1, 3000))
def test_hearing_more_never_yields_less_text(
    parts: list[str], a: int, b: int, generated_ms: int
) -> None:
    text = " ".join(parts)
    low, high = sorted((a, b))
    assert len(heard_prefix(text, low, generated_ms)) <= len(heard_prefix(text, high, generated_ms))


def test_text_written_without_spaces_is_cut_at_the_estimate() -> None:
    # Chinese or Japanese has no spaces to snap back to: the whole would be lost.
    text = "好的\uff0c您的预约是星期二下午三点\u3002"  # with a full-width comma, stop
    assert heard_prefix(text, 1000, 2000) == text[: len(text) // 2]
    assert heard_prefix("Hello there friend", 1000, 2000) == "Hello"  # words still snap
