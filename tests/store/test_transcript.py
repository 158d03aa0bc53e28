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


def test_one_space_in_a_chinese_reply_does_not_throw_away_what_was_heard_after_it() -> None:
    # One space, before the order number, 21 characters in: 90% heard is the 41 of the
    # 46 characters the estimate gives, as without the space, not the 21 before it.
    text = (
        "好的\uff0c我来帮您查一下订单状态。您的订单号是 A12345\uff0c"
        "预计明天送达\uff0c请注意查收短信通知。"
    )
    assert heard_prefix(text, 900, 1000) == text[:41]
    wide = text.replace(" ", "\u3000")  # an ideographic space
    assert heard_prefix(wide, 900, 1000) == wide[:41]
    unspaced = text.replace(" ", "")
    assert heard_prefix(unspaced, 900, 1000) == unspaced[: len(unspaced) * 9 // 10]


@pytest.mark.parametrize(
    ("heard_ms", "expected"),
    [
        (270, "您的订单号是"),  # cut at 9, inside "A12345": back to its start, not further
        (360, "您的订单号是A12345"),  # cut at 12, just before the wide comma
        (660, "您的订单号是A12345\uff0c请 check"),  # cut at 23, inside "your"
        (880, "您的订单号是A12345\uff0c请 check your"),  # cut at 30, inside "email"
        (960, "您的订单号是A12345\uff0c请 check your email 邮"),  # cut at 33: at the estimate
    ],
)
def test_mixed_chinese_and_english_snaps_back_only_within_a_word(
    heard_ms: int, expected: str
) -> None:
    text = "您的订单号是A12345\uff0c请 check your email 邮件。"  # 35 characters
    assert heard_prefix(text, heard_ms, 1000) == expected


def test_korean_is_written_with_spaces_and_snaps_to_words() -> None:
    text = "주문하신 상품은 내일 도착합니다"
    assert heard_prefix(text, 500, 1000) == "주문하신 상품은"  # cut at 8: on the space
    assert heard_prefix(text, 600, 1000) == "주문하신 상품은"  # cut at 10: inside "내일"


def test_full_width_latin_is_a_word_as_latin_is() -> None:
    # Common in Japanese text: a run of full-width Latin is one word, cut whole or not at all.
    text = "\u306f\u3044\u3001\uff2f\uff2b\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25\u3067\u3059"
    assert heard_prefix(text, 500, 1000) == "\u306f\u3044\u3001"  # cut at 7: in the word
    assert heard_prefix(text, 900, 1000) == text[:12]  # cut at 12: after it


@given(
    st.lists(st.text(alphabet="ab好的\uff0c。 \u3000", min_size=1, max_size=6), max_size=10),
    st.integers(0, 3000),
    st.integers(0, 3000),
    st.integers(1, 3000),
)
def test_hearing_more_of_mixed_text_never_yields_less(
    parts: list[str], a: int, b: int, generated_ms: int
) -> None:
    text = "".join(parts)
    low, high = sorted((a, b))
    heard = heard_prefix(text, low, generated_ms)
    assert text.startswith(heard)
    assert len(heard) <= len(heard_prefix(text, high, generated_ms))
