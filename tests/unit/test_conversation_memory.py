"""What a renewed session is told of the call so far."""

from __future__ import annotations

from switchboard.call_actions import (
    AddUserText,
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    PhaseChanged,
)
from switchboard.conversation_memory import MAX_TURNS, ConversationMemory


def test_a_late_caller_transcript_keeps_the_place_its_speech_began() -> None:
    memory = ConversationMemory()
    for action in [
        AgentTurnFinished("item_G", "Hello, Bright Smiles here."),
        CallerTurnStarted("item_U"),
        AgentTurnStarted("item_R"),
        AgentTranscriptGrew("item_R", "Sure, "),
        AgentTranscriptGrew("item_R", "Tuesday works."),
        CallerTurnTranscribed("item_U", "Can I come Tuesday?"),  # after the reply began
        PhaseChanged("speaking", "idle"),
        AddUserText("[The caller pressed these keys on the phone: 1]"),
    ]:
        memory.note(action)
    assert memory.recent(1000) == (
        ("assistant", "Hello, Bright Smiles here."),
        ("user", "Can I come Tuesday?"),
        ("assistant", "Sure, Tuesday works."),
        ("user", "[The caller pressed these keys on the phone: 1]"),
    )


def test_unheard_and_empty_turns_are_left_out() -> None:
    memory = ConversationMemory()
    memory.note(CallerTurnStarted("item_U"))  # never transcribed
    memory.note(AgentTranscriptGrew("item_R", "Let me check that for you."))
    memory.note(AgentTurnInterrupted("item_R", 0, 2000))  # cut before a word was heard
    assert memory.recent(1000) == ()
    assert memory.recent(0) == ()


def test_memory_stays_bounded_on_a_long_call() -> None:
    memory = ConversationMemory()
    for n in range(MAX_TURNS + 50):
        memory.note(AgentTurnFinished(f"item_{n}", f"turn {n}"))
    turns = memory.recent(10**9)
    assert len(turns) == MAX_TURNS
    assert turns[-1] == ("assistant", f"turn {MAX_TURNS + 49}")
    assert turns[0] == ("assistant", "turn 50")


def test_text_after_a_cut_does_not_move_the_heard_estimate() -> None:
    memory = ConversationMemory()
    memory.note(AgentTranscriptGrew("item_R", "We have Tuesday at four or Friday at ten."))
    memory.note(AgentTurnInterrupted("item_R", 1000, 2000))
    memory.note(AgentTranscriptGrew("item_R", " Or Saturday, if that suits you better."))
    assert memory.recent(1000) == (("assistant", "We have Tuesday at"),)


def test_recent_keeps_the_newest_turns_that_fit_and_nothing_past_one_that_does_not() -> None:
    memory = ConversationMemory()
    for n, text in enumerate(["aaaa", "b" * 10, "cc", "ddd"]):
        memory.note(AgentTurnFinished(f"item_{n}", text))
    newest = (("assistant", "cc"), ("assistant", "ddd"))
    assert memory.recent(5) == newest  # an exact fit is kept
    # "aaaa" would fit the 4 chars left, but skipping the long turn would leave a gap.
    assert memory.recent(9) == newest


def test_turns_are_remembered_trimmed_and_blank_ones_left_out() -> None:
    memory = ConversationMemory()
    memory.note(CallerTurnTranscribed("item_U", " Can I come Tuesday? "))  # no started notice
    memory.note(AgentTurnFinished("item_R", "   "))
    memory.note(AddUserText("first typed"))
    memory.note(AddUserText("second typed"))
    assert memory.recent(1000) == (
        ("user", "Can I come Tuesday?"),
        ("user", "first typed"),
        ("user", "second typed"),
    )
