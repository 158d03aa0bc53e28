"""What `make bench` computes from the emulators' records: synthetic records in, figures out."""

from __future__ import annotations

from bench.call_metrics import model_to_caller
from bench.live_calls import _largest, broken_targets

FRAME = 160  # 20 ms of mu-law: what the phone receives in one message
DELTA = 800  # 100 ms: what the model sends in one delta (5 frames)


def reply(tag: int, count: int, t0: float) -> tuple[list[tuple[float, str, bytes]], list]:
    """A reply of ``count`` deltas from ``t0`` (0.1 s apart), and the phone's frames of it."""
    deltas = [(t0 + 0.1 * i, f"item_{tag}", bytes([tag, i]) * (DELTA // 2)) for i in range(count)]
    received = [
        (t + 0.005 + 0.02 * k, audio[k * FRAME : (k + 1) * FRAME])
        for t, _, audio in deltas
        for k in range(DELTA // FRAME)
    ]
    return deltas, received


def test_a_reply_stopped_short_with_audio_after_it_is_counted_lost() -> None:
    first, heard_first = reply(1, 10, 0.0)
    second, heard_second = reply(2, 5, 2.0)
    deltas, whole = first + second, heard_first + heard_second
    latencies, replies, short = model_to_caller(whole, deltas)
    assert (len(latencies), len(replies), short) == (15, 2, 0)
    # A frame of the first reply's fourth delta never arrived, and audio came after it.
    gapped = whole[:17] + whole[18:]
    latencies, replies, short = model_to_caller(gapped, deltas)
    assert short == 1 and len(latencies) == 3 + 5
    # The stream's end cut the last reply: not lost.
    _, _, short = model_to_caller(whole[:-7], deltas)
    assert short == 0


def result(calls: int, **changes: object) -> dict[str, object]:
    p99 = {"p50": 1.0, "p99": 5.0, "count": calls}
    base: dict[str, object] = {
        "calls": calls,
        "placed": calls,
        "measured_calls": calls,
        "caller_to_model_ms": p99,
        "model_to_caller_ms": p99,
        "caller_unmatched": 0,
        "replies_lost": 0,
        "max_gap_ms": 30.0,
        "setup_system_ms": p99,
        "no_greeting": 0,
        "barge_in_ms": p99,
        "pss_mb": {"mean": 70.0, "max": 75.0},
    }
    return base | changes


def test_every_target_is_checked_as_the_issue_words_it() -> None:
    assert broken_targets(result(10)) == []
    assert broken_targets(result(10, max_gap_ms=41.0)) == ["gap"]
    assert broken_targets(result(10, no_greeting=1)) == ["setup"]
    assert broken_targets(result(10, replies_lost=1)) == ["lost"]
    assert broken_targets(result(10, pss_mb={"mean": 70.0, "max": 81.0})) == ["pss"]


def test_the_largest_n_is_one_below_which_every_n_held() -> None:
    rows = [
        {"calls": 10, "broken": []},
        {"calls": 20, "broken": ["relay"]},
        {"calls": 30, "broken": []},  # a pass above a miss: noise, not capacity
    ]
    assert _largest(rows) == 10
    assert _largest([{"calls": 10, "broken": ["pss"]}], frozenset({"pss"})) == 10
