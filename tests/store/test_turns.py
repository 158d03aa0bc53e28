"""Transcript turns: conversation order, cuts, buffered agent text, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from switchboard.errors import StoreError
from switchboard.store import CallStore, NewCall, Turn
from tests.store.conftest import Clock

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest_asyncio.fixture
async def reader(db_url: str, store: CallStore) -> AsyncIterator[CallStore]:
    """A second store on the same database: sees only what was written."""
    other = await CallStore.open(db_url)
    try:
        yield other
    finally:
        await other.close()


async def new_call(store: CallStore) -> str:
    return (await store.create_call(NewCall("outbound", "+15551230001", "+15559990000"))).id


async def turns(store: CallStore, call_id: str) -> list[tuple[str, str, str, str | None]]:
    detail = await store.get_call(call_id)
    assert detail is not None
    return [(turn.role, turn.item_id, turn.state, turn.text) for turn in detail.transcript]


async def turn(store: CallStore, call_id: str, item_id: str) -> Turn:
    detail = await store.get_call(call_id)
    assert detail is not None
    return next(turn for turn in detail.transcript if turn.item_id == item_id)


async def test_a_late_caller_transcript_keeps_its_reserved_place(store: CallStore) -> None:
    call = await new_call(store)
    await store.reserve_caller_turn(call, "item_caller_1", t(1))
    await store.start_agent_turn(call, "item_agent_1", t(2), previous_item_id="item_caller_1")
    await store.grow_agent_turn(call, "item_agent_1", "Sure, ")
    await store.grow_agent_turn(call, "item_agent_1", "one moment.")
    await store.finish_agent_turn(call, "item_agent_1", "Sure, one moment.", t(2.5))
    await store.reserve_caller_turn(call, "item_caller_2", t(4))
    # The first transcript arrives after the reply was written, the second never does.
    await store.record_caller_turn(call, "item_caller_1", "Can you check my order?", t(3))
    await store.reserve_caller_turn(call, "item_caller_1", t(9))  # repeated: no move
    assert await turns(store, call) == [
        ("caller", "item_caller_1", "transcribed", "Can you check my order?"),
        ("agent", "item_agent_1", "finished", "Sure, one moment."),
        ("caller", "item_caller_2", "pending", None),
    ]
    first = await turn(store, call, "item_caller_1")
    assert (first.started_at, first.ended_at) == (t(1), t(3))


@pytest.mark.parametrize("ended_by", ["terminal_status", "call_media_closed"])
async def test_a_caller_turn_never_transcribed_is_untranscribed_once_the_call_ends(
    store: CallStore, ended_by: str
) -> None:
    call = await new_call(store)
    other = await new_call(store)
    for each in (call, other):
        await store.reserve_caller_turn(each, "item_c1", t(1))
        await store.reserve_caller_turn(each, "item_c2", t(2))
    await store.record_caller_turn(call, "item_c1", "Hello?", t(1.5))
    if ended_by == "terminal_status":
        await store.update_status(call, "completed", t(3))
    else:
        await store.close_caller_turns(call)
    assert await turns(store, call) == [
        ("caller", "item_c1", "transcribed", "Hello?"),
        ("caller", "item_c2", "untranscribed", None),
    ]
    assert {turn[2] for turn in await turns(store, other)} == {"pending"}  # its own only
    # A transcript that still comes (a report sent late) fills the turn as ever.
    await store.record_caller_turn(call, "item_c2", "Bye.", t(4))
    assert (await turn(store, call, "item_c2")).state == "transcribed"


async def test_an_unreserved_caller_transcript_goes_before_the_reply_to_it(
    store: CallStore,
) -> None:
    call = await new_call(store)
    await store.start_agent_turn(call, "item_agent", t(2), previous_item_id="item_caller")
    await store.finish_agent_turn(call, "item_agent", "Hello!", t(2.5))
    await store.record_caller_turn(call, "item_caller", "Hi there", t(3))
    assert [item for _, item, _, _ in await turns(store, call)] == ["item_caller", "item_agent"]


async def test_transcripts_of_different_calls_do_not_mix(store: CallStore) -> None:
    a, b = await new_call(store), await new_call(store)
    await store.record_caller_turn(a, "item_1", "from a", t(1))
    await store.record_caller_turn(b, "item_1", "from b", t(1))
    assert await turns(store, a) == [("caller", "item_1", "transcribed", "from a")]
    assert await turns(store, b) == [("caller", "item_1", "transcribed", "from b")]


async def test_cut_after_the_transcript_finished(store: CallStore) -> None:
    # Usual case: the model finishes generating long before playback ends.
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.finish_agent_turn(call, "item_a", "Your parcel arrives on Tuesday morning.", t(2))
    await store.cut_agent_turn(call, "item_a", heard_ms=1500, generated_ms=4000, at=t(3))
    await store.cut_agent_turn(call, "item_a", 3900, 4000, t(5))  # the first stands
    cut = await turn(store, call, "item_a")
    assert cut.interrupted and cut.state == "interrupted"
    assert cut.text == "Your parcel arrives on Tuesday morning."
    assert cut.heard_text == "Your parcel"  # 39 chars * 1500/4000 = 14 -> back to a word
    assert (cut.heard_ms, cut.generated_ms) == (1500, 4000)


async def test_cut_while_generating_uses_the_text_so_far(store: CallStore) -> None:
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    for delta in ("Let me ", "look that ", "up for you"):
        await store.grow_agent_turn(call, "item_a", delta)
    await store.cut_agent_turn(call, "item_a", heard_ms=500, generated_ms=1000, at=t(2))
    await store.grow_agent_turn(call, "item_a", " right away.")  # after the cut: dropped
    cut = await turn(store, call, "item_a")
    assert (cut.text, cut.heard_text) == ("Let me look that up for you", "Let me look")
    # A final transcript after the cut replaces the generated text, not what was heard.
    await store.finish_agent_turn(call, "item_a", "Let me look that up for you right away.", t(3))
    cut = await turn(store, call, "item_a")
    assert cut.state == "interrupted"
    assert (cut.text, cut.heard_text) == ("Let me look that up for you right away.", "Let me look")


async def test_a_cut_tried_again_after_a_failed_write_keeps_the_text(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    deltas = [("Let me ", 0), ("look that up", 7)]
    for delta, offset in deltas:
        await store.grow_agent_turn(call, "item_a", delta, offset)
    write = store._db.write

    async def failing(doing: str, work: Any) -> Any:
        if doing == "cutting an agent turn":
            raise StoreError("the database went away")
        return await write(doing, work)

    monkeypatch.setattr(store._db, "write", failing)
    with pytest.raises(StoreError):
        await store.cut_agent_turn(call, "item_a", heard_ms=500, generated_ms=1000, at=t(2))
    monkeypatch.setattr(store._db, "write", write)
    # The recorder's batch again, whole: the same deltas, then the cut.
    for delta, offset in deltas:
        await store.grow_agent_turn(call, "item_a", delta, offset)
    await store.cut_agent_turn(call, "item_a", heard_ms=500, generated_ms=1000, at=t(2))
    cut = await turn(store, call, "item_a")
    assert (cut.state, cut.text, cut.heard_text) == ("interrupted", "Let me look that up", "Let me")


async def test_turns_without_a_start_are_kept(store: CallStore) -> None:
    call = await new_call(store)
    await store.grow_agent_turn(call, "item_a", "Hello")
    await store.finish_agent_turn(call, "item_a", "Hello there.", t(1))
    await store.cut_agent_turn(call, "item_b", heard_ms=0, generated_ms=800, at=t(2))
    await store.finish_agent_turn(call, "item_c", "Bye.", t(3))
    assert await turns(store, call) == [
        ("agent", "item_a", "finished", "Hello there."),
        ("agent", "item_b", "interrupted", ""),
        ("agent", "item_c", "finished", "Bye."),
    ]


async def test_deltas_are_written_at_most_once_per_interval(
    store: CallStore, reader: CallStore, clock: Clock
) -> None:
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.grow_agent_turn(call, "item_a", "One")  # first delta: written at once
    assert (await turn(reader, call, "item_a")).text == "One"
    clock.advance(0.1)
    await store.grow_agent_turn(call, "item_a", " two")
    assert (await turn(reader, call, "item_a")).text == "One"  # waiting in memory
    assert (await turn(store, call, "item_a")).text == "One two"  # the writer sees it
    clock.advance(0.2)
    await store.grow_agent_turn(call, "item_a", " three")  # 0.3 s since the write: due
    assert (await turn(reader, call, "item_a")).text == "One two three"
    await store.grow_agent_turn(call, "item_a", " four")
    assert (await turn(reader, call, "item_a")).text == "One two three"
    clock.advance(0.25)
    await store.settle()  # the scheduled write lands once the interval has passed
    assert (await turn(reader, call, "item_a")).text == "One two three four"
    assert (await turn(reader, call, "item_a")).state == "speaking"


async def test_close_writes_buffered_text(db_url: str, store: CallStore, reader: CallStore) -> None:
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.grow_agent_turn(call, "item_a", "Written")
    await store.grow_agent_turn(call, "item_a", " and buffered")
    await store.close()
    assert (await turn(reader, call, "item_a")).text == "Written and buffered"


async def test_another_process_can_continue_a_turn(store: CallStore, reader: CallStore) -> None:
    # An actor restarted mid-turn: its new store has never seen the turn start.
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.start_agent_turn(call, "item_a", t(2))  # repeated: ignored
    await store.grow_agent_turn(call, "item_a", "Before ")
    await reader.grow_agent_turn(call, "item_a", "and after")
    await reader.finish_agent_turn(call, "item_a", "", t(3))
    finished = [("agent", "item_a", "finished", "Before and after")]
    assert await turns(reader, call) == finished
    await reader.grow_agent_turn(call, "item_a", " late")  # finished here: ignored
    # The first store still buffers the turn; its writes never touch a finished turn.
    await store.grow_agent_turn(call, "item_a", "stale")
    await store.flush()
    assert await turns(reader, call) == finished
    assert (await turn(reader, call, "item_a")).started_at == t(1)


async def test_late_deltas_of_a_turn_finished_elsewhere_are_dropped(
    store: CallStore, reader: CallStore
) -> None:
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.cut_agent_turn(call, "item_a", heard_ms=10, generated_ms=100, at=t(2))
    await reader.grow_agent_turn(call, "item_a", "never heard")  # looks it up: cut
    await reader.grow_agent_turn(call, "item_a", " at all")  # remembered: no lookup
    assert await turns(reader, call) == [("agent", "item_a", "interrupted", "")]


@pytest.mark.parametrize("flush_interval_s", [0.0])
async def test_every_delta_is_written_with_a_zero_interval(
    db_url: str, flush_interval_s: float
) -> None:
    writer = await CallStore.open(db_url, flush_interval_s=flush_interval_s)
    reader = await CallStore.open(db_url)
    try:
        call = await new_call(writer)
        await writer.start_agent_turn(call, "item_a", t(1))
        text = ""
        for word in ("a", " b", " c"):
            await writer.grow_agent_turn(call, "item_a", word)
            text += word
            assert (await turn(reader, call, "item_a")).text == text
    finally:
        await writer.close()
        await reader.close()


async def test_text_no_backend_can_hold_is_kept_with_a_replacement_character(
    store: CallStore, reader: CallStore
) -> None:
    # PostgreSQL refuses NUL, and a lone surrogate is not Unicode: a model's transcript
    # (or a tool's arguments) holding one is kept, not lost with the write that carried it.
    call_id = (
        await store.create_call(
            NewCall(
                "outbound",
                "+15551230001",
                "+15559990000",
                instruction="be\x00brief",
                metadata={"k\x00": ["\ud83d"]},
            )
        )
    ).id
    await store.record_caller_turn(call_id, "item_c", "hi\x00 there \ud83d", t(1))
    await store.start_agent_turn(call_id, "item_a", t(2))
    await store.grow_agent_turn(call_id, "item_a", "he\x00")
    await store.finish_agent_turn(call_id, "item_a", "hello \udfff", t(3))
    await store.append_event(call_id, "tool_called", t(3), {"arguments": "\x00\ud800"})
    await store.flush()
    detail = await reader.get_call(call_id)
    assert detail is not None
    assert detail.call.instruction == "be\ufffdbrief"
    assert detail.call.metadata == {"k\ufffd": ["\ufffd"]}
    assert [turn.text for turn in detail.transcript] == ["hi\ufffd there \ufffd", "hello \ufffd"]
    assert detail.timeline[-1].data == {"arguments": "\ufffd\ufffd"}
    # A search for one finds what it became, on both backends, rather than failing.
    assert [c.id for c in (await reader.list_calls(search="\x00")).calls] == [call_id]


async def test_a_delta_that_came_during_a_background_write_is_written_by_the_next_one(
    store: CallStore, reader: CallStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own write failed (the database blipped), and no other delta or finish follows:
    # the background writer, which was writing when it came, still writes it.
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.grow_agent_turn(call, "item_a", "One")  # written at once
    clock.advance(0.1)
    await store.grow_agent_turn(call, "item_a", " two")  # waits for the background write
    assert (await turn(reader, call, "item_a")).text == "One"
    write = store._db.write
    writes = 0
    came: list[asyncio.Task[None]] = []
    began = asyncio.Event()

    async def blipping(doing: str, work: Any) -> Any:
        nonlocal writes
        if doing == "writing an agent transcript":
            writes += 1
            if writes == 1:  # the background write: a delta comes while it runs
                came.append(asyncio.create_task(store.grow_agent_turn(call, "item_a", " three")))
                began.set()
            if writes == 2:  # that delta's own write, once the background one is done
                raise StoreError("the database went away")
        return await write(doing, work)

    monkeypatch.setattr(store._db, "write", blipping)
    clock.advance(0.2)  # the background write is due
    await asyncio.wait_for(began.wait(), 10.0)
    [came_meanwhile] = came
    with pytest.raises(StoreError):
        await came_meanwhile
    monkeypatch.setattr(store._db, "write", write)
    assert (await turn(reader, call, "item_a")).text == "One two"
    clock.advance(0.3)
    await store.settle()
    assert (await turn(reader, call, "item_a")).text == "One two three"


@pytest.mark.parametrize("told_when", [True, False])
async def test_a_reply_still_speaking_when_the_call_ends_is_cut_nothing_known_heard(
    store: CallStore, clock: Clock, told_when: bool
) -> None:
    # Its actor died mid-reply (the recorder writes the pool's word): no cut will come.
    # Left speaking it would count all it generated as heard, and stay buffered for ever
    # in a recorder that outlives calls.
    call, other = await new_call(store), await new_call(store)
    for each in (call, other):
        await store.start_agent_turn(each, "item_a", t(1))
        await store.grow_agent_turn(each, "item_a", "Your order ships")
        await store.grow_agent_turn(each, "item_a", " tomorrow and")  # buffered
    if told_when:
        await store.close_caller_turns(call, t(3))
        ended = t(3)
    else:
        await store.close_caller_turns(call)  # no status yet, and no time given
        ended = clock.wall  # the store's time: it is told no other
    cut = await turn(store, call, "item_a")
    assert (cut.state, cut.text, cut.heard_text) == (
        "interrupted",
        "Your order ships tomorrow and",
        "",
    )
    assert (cut.ended_at, cut.heard_ms, cut.generated_ms) == (ended, None, None)
    assert (await turn(store, other, "item_a")).state == "speaking"  # its own only
    assert list(store._turns.live_text(call)) == []
    assert [key for key in store._turns._locks if key[0] == call] == []
    await store.grow_agent_turn(call, "item_a", " late")  # its audio never played
    assert (await turn(store, call, "item_a")).text == "Your order ships tomorrow and"


async def test_a_terminal_status_cuts_a_reply_until_its_actor_says_how_it_ended(
    store: CallStore, reader: CallStore
) -> None:
    # Twilio's final word (the ingress's store) can come before the actor's last report,
    # or with no report ever to follow (the actor lost, the reconciler settling the call):
    # the reply is cut, nothing known heard, until a finish from before the end replaces it.
    call = await new_call(store)
    await store.reserve_caller_turn(call, "item_c", t(1))
    await store.start_agent_turn(call, "item_a", t(2))
    await reader.update_status(call, "completed", t(3))
    assert (await turn(reader, call, "item_c")).state == "untranscribed"
    cut = await turn(reader, call, "item_a")
    assert (cut.state, cut.heard_text, cut.heard_ms, cut.ended_at) == (
        "interrupted",
        "",
        None,
        t(3),
    )
    await store.finish_agent_turn(call, "item_a", "Goodbye!", t(2.5))
    done = await turn(reader, call, "item_a")
    assert (done.state, done.heard_text, done.ended_at) == ("finished", None, t(2.5))


async def test_a_cut_measured_after_the_calls_end_replaces_the_unmeasured_one(
    store: CallStore, reader: CallStore
) -> None:
    # The pool's word that the actor died is written before the actor's last report,
    # which has the cut it measured.
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.grow_agent_turn(call, "item_a", "One two three four")
    await store.close_caller_turns(call, t(3))
    assert (await turn(reader, call, "item_a")).heard_text == ""
    await store.cut_agent_turn(call, "item_a", heard_ms=500, generated_ms=1000, at=t(2))
    cut = await turn(reader, call, "item_a")
    assert (cut.state, cut.heard_text, cut.heard_ms, cut.ended_at) == (
        "interrupted",
        "One two",
        500,
        t(2),
    )
    await store.cut_agent_turn(call, "item_a", heard_ms=900, generated_ms=1000, at=t(4))
    assert (await turn(reader, call, "item_a")).heard_ms == 500  # a measured cut stands


@pytest.mark.parametrize(("finished_at", "state"), [(2, "finished"), (4, "interrupted")])
async def test_a_finish_replaces_the_ends_cut_only_if_it_came_first(
    store: CallStore, reader: CallStore, finished_at: float, state: str
) -> None:
    # A finish before the end (its report lost the race to the pool's) played in full; one
    # after it cannot have (a live actor cuts a reply still playing at its end).
    call = await new_call(store)
    await store.start_agent_turn(call, "item_a", t(1))
    await store.close_caller_turns(call, t(3))
    await store.finish_agent_turn(call, "item_a", "Your order ships tomorrow.", t(finished_at))
    done = await turn(reader, call, "item_a")
    assert (done.state, done.text, done.heard_text) == (
        state,
        "Your order ships tomorrow.",
        None if state == "finished" else "",
    )
    assert done.ended_at == t(min(finished_at, 3))
