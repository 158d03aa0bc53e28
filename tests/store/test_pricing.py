"""Pure cost arithmetic."""

from __future__ import annotations

from decimal import Decimal

from switchboard.realtime_events import Usage
from switchboard.store.pricing import GPT_REALTIME, PRICES, PriceTable, estimate_cost, sum_usage

FLAT = PriceTable(
    audio_input=Decimal(1),
    audio_output=Decimal(2),
    text_input=Decimal(3),
    text_output=Decimal(4),
    cached_audio_input=Decimal(5),
    cached_text_input=Decimal(6),
)


def usage(**counts: int) -> Usage:
    base = dict.fromkeys(("total_tokens", "input_tokens", "output_tokens"), 0)
    return Usage(**(base | counts))


def test_each_kind_of_token_at_its_price() -> None:
    one_million = 1_000_000
    assert estimate_cost(usage(input_audio_tokens=one_million), FLAT) == 1
    assert estimate_cost(usage(output_audio_tokens=one_million), FLAT) == 2
    assert estimate_cost(usage(input_text_tokens=one_million), FLAT) == 3
    assert estimate_cost(usage(output_text_tokens=one_million), FLAT) == 4


def test_cached_tokens_split_by_the_share_of_audio_and_text_input() -> None:
    # 750k audio + 250k text input, 400k cached -> 300k cached audio, 100k cached text.
    cost = estimate_cost(
        usage(input_audio_tokens=750_000, input_text_tokens=250_000, input_cached_tokens=400_000),
        FLAT,
    )
    expected = Decimal("0.45") * 1 + Decimal("0.15") * 3 + Decimal("0.3") * 5 + Decimal("0.1") * 6
    assert cost == expected


def test_cached_count_larger_than_the_input_is_capped() -> None:
    cost = estimate_cost(usage(input_text_tokens=10, input_cached_tokens=50), FLAT)
    assert cost == Decimal(10 * 6) / 1_000_000


def test_gpt_realtime_list_prices() -> None:
    assert PRICES["gpt-realtime"] is GPT_REALTIME
    cost = estimate_cost(
        usage(
            input_audio_tokens=1000,
            input_text_tokens=1000,
            input_cached_tokens=1000,
            output_audio_tokens=1000,
            output_text_tokens=1000,
        ),
        GPT_REALTIME,
    )
    # 500 audio @32 + 500 text @4 + 1000 cached @0.40 + 1000 audio out @64 + 1000 text out @16
    assert cost == Decimal("0.0984")


def test_sum_usage_adds_field_by_field() -> None:
    a = Usage(10, 6, 4, 5, 1, 2, 3, 1)
    b = Usage(20, 12, 8, 10, 2, 4, 6, 2)
    assert sum_usage([a, b]) == Usage(30, 18, 12, 15, 3, 6, 9, 3)
    assert sum_usage([]) == Usage(0, 0, 0)


def test_tokens_without_details_are_priced_as_audio() -> None:
    # A report with totals but no details: all of it at the (dearer) audio rates.
    assert estimate_cost(usage(input_tokens=1_000_000), FLAT) == 1
    assert estimate_cost(usage(output_tokens=1_000_000), FLAT) == 2
    # Totals above their details: the remainder is audio; text stays text.
    partial = usage(
        input_tokens=1_000_000,
        input_text_tokens=250_000,
        output_tokens=500_000,
        output_text_tokens=500_000,
    )
    assert estimate_cost(partial, FLAT) == Decimal("0.75") * 1 + Decimal("0.25") * 3 + 2
    # Details that add up to more than the total are taken as they are.
    assert estimate_cost(usage(input_tokens=5, input_audio_tokens=1_000_000), FLAT) == 1


def test_cached_tokens_of_a_report_without_details() -> None:
    cost = estimate_cost(usage(input_tokens=1_000_000, input_cached_tokens=400_000), FLAT)
    assert cost == Decimal("0.6") * 1 + Decimal("0.4") * 5
