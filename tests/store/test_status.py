"""Pure status rules: forward only, terminal final, times derived."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchboard.errors import StoreError
from switchboard.store.status import TERMINAL_STATUSES, StatusState, apply_status

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def t(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fold(*callbacks: tuple[str, int]) -> tuple[StatusState, list[bool]]:
    state, applied = StatusState("queued"), []
    for status, second in callbacks:
        state, moved = apply_status(state, status, t(second))
        applied.append(moved)
    return state, applied


def test_a_call_in_order() -> None:
    state, applied = fold(("initiated", 1), ("ringing", 2), ("in-progress", 5), ("completed", 65))
    assert state == StatusState("completed", answered_at=t(5), ended_at=t(65))
    assert applied == [True, True, True, True]


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_statuses_are_final(terminal: str) -> None:
    state, applied = fold(("ringing", 1), (terminal, 9), ("ringing", 10), ("in-progress", 11))
    assert state.status == terminal
    assert state.ended_at == t(9)
    assert applied == [True, True, False, False]


def test_a_second_terminal_status_does_not_replace_the_first() -> None:
    state, applied = fold(("completed", 9), ("failed", 10))
    assert (state.status, state.ended_at, applied) == ("completed", t(9), [True, False])


def test_out_of_order_callbacks_never_move_backwards() -> None:
    state, applied = fold(("in-progress", 5), ("ringing", 2), ("initiated", 1))
    assert state == StatusState("in-progress", answered_at=t(5))
    assert applied == [True, False, False]


def test_a_late_answer_still_sets_answered_at() -> None:
    # Completed arrives first; the in-progress callback (earlier) arrives after it.
    state, applied = fold(("completed", 65), ("in-progress", 5))
    assert state == StatusState("completed", answered_at=t(5), ended_at=t(65))
    assert applied == [True, False]


def test_the_earliest_answer_wins() -> None:
    state, _ = fold(("in-progress", 7), ("in-progress", 5), ("in-progress", 9))
    assert state.answered_at == t(5)


def test_repeated_status_is_not_a_move() -> None:
    _, applied = fold(("ringing", 1), ("ringing", 2))
    assert applied == [True, False]


def test_unknown_status_is_refused() -> None:
    with pytest.raises(StoreError, match="'answered'"):
        apply_status(StatusState("queued"), "answered", T0)
