"""Token prices and the cost estimate of a call, as pure data and arithmetic.

Prices are USD per 1M tokens. ``GPT_REALTIME`` holds OpenAI's list prices for
``gpt-realtime`` at its GA launch (August 2025); pass your own
:class:`PriceTable` to :meth:`CallStore.open` when they change or for another
model. Money is :class:`~decimal.Decimal`, so sums are exact.

:class:`~switchboard.realtime_events.Usage` gives the cached input tokens as
one count, without the audio/text split the Realtime API reports in
``cached_tokens_details``. The estimate splits them across audio and text in
proportion to each one's share of the input; with ``gpt-realtime`` both cached
rates are equal, so the split does not change the price.

Tokens a report counts without saying whether they were audio or text (the
totals larger than their details, or no details at all) are priced as audio,
the dearer kind on every Realtime model: an estimate that errs high, not $0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import Decimal

from switchboard.realtime_events import Usage

__all__ = ["GPT_REALTIME", "PRICES", "PriceTable", "estimate_cost", "sum_usage"]

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """USD per 1M tokens of each kind."""

    audio_input: Decimal
    audio_output: Decimal
    text_input: Decimal
    text_output: Decimal
    cached_audio_input: Decimal
    cached_text_input: Decimal


GPT_REALTIME = PriceTable(
    audio_input=Decimal("32.00"),
    audio_output=Decimal("64.00"),
    text_input=Decimal("4.00"),
    text_output=Decimal("16.00"),
    cached_audio_input=Decimal("0.40"),
    cached_text_input=Decimal("0.40"),
)

PRICES: dict[str, PriceTable] = {"gpt-realtime": GPT_REALTIME}


def sum_usage(usages: Iterable[Usage]) -> Usage:
    """Add token counts field by field."""
    totals = dict.fromkeys((f.name for f in fields(Usage)), 0)
    for usage in usages:
        for name in totals:
            totals[name] += getattr(usage, name)
    return Usage(**totals)


def estimate_cost(usage: Usage, prices: PriceTable) -> Decimal:
    """Estimated USD cost of ``usage`` at ``prices``."""
    text_in, text_out = usage.input_text_tokens, usage.output_text_tokens
    audio_in = max(usage.input_audio_tokens, usage.input_tokens - text_in)
    audio_out = max(usage.output_audio_tokens, usage.output_tokens - text_out)
    cached = min(usage.input_cached_tokens, audio_in + text_in)
    cached_audio = cached * audio_in // (audio_in + text_in) if cached else 0
    cached_text = cached - cached_audio
    dollars = (
        (audio_in - cached_audio) * prices.audio_input
        + (text_in - cached_text) * prices.text_input
        + cached_audio * prices.cached_audio_input
        + cached_text * prices.cached_text_input
        + audio_out * prices.audio_output
        + text_out * prices.text_output
    )
    return dollars / _MILLION
