"""The policy's notices, recorded through switchboard.store.record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from switchboard.call_actions import (
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    CallStatusChanged,
    ClearPlayback,
    FinishCall,
    HangUp,
    LatencyMeasured,
    PhaseChanged,
    ProblemNoted,
    RenewSession,
    RunTool,
    ToolReturned,
    TruncateItem,
    UsageReported,
)
from switchboard.errors import StoreError
from switchboard.realtime_events import Usage
from switchboard.store import CallStore, NewCall, record, record_batch
from switchboard.store.recorder import Recordable
from switchboard.store.status import is_terminal

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def test_a_conversation_recorded_from_notices(store: CallStore) -> None:
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    script: list[Recordable] = [
        PhaseChanged("greeting", "listening"),
        CallerTurnStarted("item_c1"),
        AgentTurnStarted("item_a1"),
        AgentTranscriptGrew("item_a1", "Of course, "),
        AgentTranscriptGrew("item_a1", "let me check your order now."),
        CallerTurnTranscribed("item_c1", "Can you check my order?"),  # after the reply began
        AgentTurnFinished("item_a1", "Of course, let me check your order now."),
        RunTool("call_1", "lookup_order", '{"id": 7}'),
        ToolReturned("call_1", '{"status": "shipped"}'),
        AgentTurnInterrupted("item_a1", heard_ms=1200, generated_ms=4000),
        ClearPlayback(),  # not part of the record
        TruncateItem("item_a1", 1000),
        UsageReported("resp_1", Usage(100, 60, 40, 50, 10, 0, 30, 10)),
        ProblemNoted("twilio", "mark_unknown", "a mark we never sent"),
        RenewSession("session_cap"),
        HangUp("caller asked"),
        FinishCall("twilio stream stopped"),
    ]
    for n, message in enumerate(script):
        await record(store, call, message, T0 + timedelta(seconds=n))
    detail = await store.get_call(call)
    assert detail is not None
    assert [(t.item_id, t.text, t.heard_text) for t in detail.transcript] == [
        ("item_c1", "Can you check my order?", None),
        ("item_a1", "Of course, let me check your order now.", "Of course,"),
    ]
    assert [e.kind for e in detail.timeline] == [
        "phase",
        "tool_call",
        "tool_result",
        "interruption",
        "problem",
        "session_renewed",
        "hangup",
        "finished",
    ]
    assert detail.timeline[1].data == {
        "tool_call_id": "call_1",
        "name": "lookup_order",
        "arguments": '{"id": 7}',
    }
    cut = {"item_id": "item_a1", "heard_ms": 1200, "generated_ms": 4000, "by": "caller"}
    assert detail.timeline[3].data == cut
    assert detail.timeline[4].data["fatal"] is False
    assert detail.usage == Usage(100, 60, 40, 50, 10, 0, 30, 10)


async def test_a_web_call_status_moves_forward_through_the_recorder(store: CallStore) -> None:
    call = (await store.create_call(NewCall("web", "browser", "browser"))).id
    for status, minutes in (("in-progress", 1), ("completed", 3), ("in-progress", 4)):
        await record(store, call, CallStatusChanged(status), T0 + timedelta(minutes=minutes))
    detail = await store.get_call(call)
    assert detail is not None
    assert (detail.call.direction, detail.call.status) == ("web", "completed")
    assert detail.call.duration_s == 120.0
    statuses = [(e.data["status"], e.data["applied"]) for e in detail.timeline]
    assert statuses == [("in-progress", True), ("completed", True), ("in-progress", False)]


async def test_an_unknown_direction_is_refused_naming_the_choices(store: CallStore) -> None:
    with pytest.raises(StoreError, match="outbound, inbound, web, got 'sideways'"):
        await store.create_call(NewCall("sideways", "a", "b"))  # type: ignore[arg-type]


async def test_a_batch_writes_its_timeline_in_one_transaction_in_time_order(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = (await store.create_call(NewCall("outbound", "+15559990000", "+15551230001"))).id
    batch: list[tuple[Recordable, datetime]] = [
        (PhaseChanged("awaiting_answer", "thinking"), T0),
        (AgentTurnStarted("item_a1"), T0 + timedelta(seconds=1)),
        (PhaseChanged("thinking", "speaking"), T0 + timedelta(seconds=1)),
        (LatencyMeasured("answer", 312.5), T0 + timedelta(seconds=1)),
        (AgentTurnFinished("item_a1", "Hello!"), T0 + timedelta(seconds=2)),
        (PhaseChanged("speaking", "idle"), T0 + timedelta(seconds=3)),
    ]
    writes: list[str] = []
    write = store._db.write

    async def counted(doing: str, work: Any) -> Any:
        writes.append(doing)
        return await write(doing, work)

    monkeypatch.setattr(store._db, "write", counted)
    await record_batch(store, call, batch)
    assert writes.count("appending call events") == 1
    detail = await store.get_call(call)
    assert detail is not None
    assert [(e.kind, e.data.get("new", e.data.get("kind"))) for e in detail.timeline] == [
        ("phase", "thinking"),
        ("phase", "speaking"),
        ("latency", "answer"),
        ("phase", "idle"),
    ]
    assert [t.text for t in detail.transcript] == ["Hello!"]


async def test_a_batch_is_on_disk_when_record_batch_returns(db_url: str, store: CallStore) -> None:
    # The recorder acknowledges a report once this returns; the call actor never sends
    # it again, so a recorder dying a moment later must not take the reply's text along.
    call = (await store.create_call(NewCall("outbound", "+15551230001", "+15559990000"))).id
    said = [AgentTurnStarted("item_a"), AgentTranscriptGrew("item_a", "Your appointment ")]
    await record_batch(store, call, [(m, T0) for m in said])
    await record_batch(store, call, [(AgentTranscriptGrew("item_a", "is on Tuesday."), T0)])
    reader = await CallStore.open(db_url)  # another process's view: only what was written
    try:
        detail = await reader.get_call(call)
    finally:
        await reader.close()
    assert detail is not None
    assert [t.text for t in detail.transcript] == ["Your appointment is on Tuesday."]


async def test_an_action_the_store_refuses_is_noted_and_the_rest_is_kept(
    store: CallStore,
) -> None:
    # A peer's bad value (a negative token count, an id too long) would fail the batch
    # on every resend, and with it everything the call said after it.
    call = (await store.create_call(NewCall("outbound", "+15551230001", "+15559990000"))).id
    batch: list[Recordable] = [
        AgentTurnStarted("item_a"),
        UsageReported("resp_1", Usage(-1, 0, 0, 0, 0, 0, 0, 0)),
        AgentTurnStarted("x" * 65),
        AgentTurnFinished("item_a", "Goodbye."),
        UsageReported("resp_2", Usage(2**31, 0, 0, 0, 0, 0, 0, 0)),  # PostgreSQL's INTEGER
        FinishCall("stream_stopped"),
    ]
    await record_batch(store, call, [(m, T0) for m in batch])
    detail = await store.get_call(call)
    assert detail is not None
    assert [(t.item_id, t.text) for t in detail.transcript] == [("item_a", "Goodbye.")]
    problems = [e.data for e in detail.timeline if e.kind == "problem"]
    assert [(p["source"], p["reason"]) for p in problems] == [("store", "unrecordable")] * 3
    assert "UsageReported not recorded" in str(problems[0]["message"])
    assert detail.timeline[-1].kind == "finished"


async def test_a_batch_sent_again_does_not_double_the_agents_text(store: CallStore) -> None:
    # The call actor sends a batch again when a report fails, however far the recorder
    # got with it: each delta lands where it did the first time.
    call = (await store.create_call(NewCall("outbound", "+15551230001", "+15559990000"))).id
    first = [AgentTurnStarted("item_a"), AgentTranscriptGrew("item_a", "One two ", 0)]
    then = [AgentTranscriptGrew("item_a", "three.", 8)]
    await record_batch(store, call, [(m, T0) for m in first])
    await record_batch(store, call, [(m, T0) for m in first])  # sent again
    await record_batch(store, call, [(m, T0) for m in then])
    await record_batch(store, call, [(m, T0) for m in then])  # and again
    await record_batch(store, call, [(AgentTurnInterrupted("item_a", 500, 1000), T0)])
    detail = await store.get_call(call)
    assert detail is not None
    [turn] = detail.transcript
    assert (turn.text, turn.heard_text) == ("One two three.", "One two")


async def test_a_batch_notes_its_recorded_actions_with_its_timeline(store: CallStore) -> None:
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    assert await store.actions_recorded(call, "a") == 0
    await record_batch(store, call, [(AgentTurnStarted("item_1"), T0)], ("a", 1))
    assert await store.actions_recorded(call, "a") == 0  # no timeline write: nothing noted
    await record_batch(store, call, [(PhaseChanged("listening", "speaking"), T0)], ("a", 2))
    assert await store.actions_recorded(call, "a") == 2
    await record_batch(store, call, [(LatencyMeasured("answer", 300.0), T0)], ("a", 1))
    assert await store.actions_recorded(call, "a") == 2  # never back
    assert await store.actions_recorded(call, "b") == 0  # another sender counts apart
    assert await store.actions_recorded("no-such-call", "a") == 0
    with pytest.raises(StoreError, match="actions_recorded"):
        await store.append_events(call, [("phase", T0, {})], ("a", -1))
    with pytest.raises(StoreError, match="sender"):
        await store.append_events(call, [("phase", T0, {})], ("x" * 33, 1))
    detail = await store.get_call(call)
    assert detail is not None
    assert [e.kind for e in detail.timeline] == ["phase", "latency"]


async def problems_and_kinds(store: CallStore, call: str) -> tuple[list[str], list[str]]:
    detail = await store.get_call(call)
    assert detail is not None
    problems = [str(e.data["message"]) for e in detail.timeline if e.kind == "problem"]
    return problems, [e.kind for e in detail.timeline]


async def test_an_id_holding_a_control_character_is_noted_the_same_on_both_backends(
    store: CallStore,
) -> None:
    # PostgreSQL refused NUL with a DataError (a plain StoreError: the call actor sent the
    # batch again forever); SQLite stored it. Now both refuse it before any SQL.
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    batch: list[Recordable] = [
        CallerTurnStarted("item\x00x"),
        CallerTurnTranscribed("item\x00x", "Hello?"),
        AgentTurnStarted("item_\x1b[31m"),
        AgentTranscriptGrew("item_\x00", "Hi", 0),
        AgentTurnFinished("item_\x00", "Hi"),
        AgentTurnInterrupted("item_\x00", 10, 20),
        UsageReported("resp\x00", Usage(1, 1, 0)),
        PhaseChanged("idle", "listening"),
    ]
    await record_batch(store, call, [(m, T0) for m in batch], ("a", len(batch)))
    problems, kinds = await problems_and_kinds(store, call)
    assert kinds == ["problem"] * 7 + ["phase"]
    assert "CallerTurnStarted not recorded: item_id contains a NUL character" in problems[0]
    assert "control character (U+001B) at position 5" in problems[2]
    assert "UsageReported not recorded: response_id contains a NUL" in problems[6]
    detail = await store.get_call(call)
    assert detail is not None and detail.transcript == () and detail.usage == Usage(0, 0, 0)
    assert await store.actions_recorded(call, "a") == len(batch)  # never sent again


async def test_an_item_id_used_for_both_sides_is_noted_and_the_rest_kept(
    store: CallStore,
) -> None:
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    batch: list[Recordable] = [
        CallerTurnStarted("item_1"),
        AgentTurnStarted("item_1"),  # the peer reused the id
        AgentTurnFinished("item_1", "Hello"),
        PhaseChanged("idle", "listening"),
    ]
    await record_batch(store, call, [(m, T0) for m in batch], ("a", len(batch)))
    problems, kinds = await problems_and_kinds(store, call)
    assert kinds == ["problem", "problem", "phase"]
    assert "AgentTurnStarted not recorded: item 'item_1'" in problems[0]
    assert "is a caller turn, not agent" in problems[1]


async def test_a_timeline_value_that_is_not_json_is_noted_alone(store: CallStore) -> None:
    # Checked for the whole batch, one NaN refused every event of it, on every resend.
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    batch: list[Recordable] = [
        PhaseChanged("idle", "listening"),
        LatencyMeasured("response", float("nan")),
        LatencyMeasured("answer", 300.0),
        RunTool("call_1", "lookup", "{}"),
    ]
    await record_batch(store, call, [(m, T0) for m in batch], ("a", len(batch)))
    problems, kinds = await problems_and_kinds(store, call)
    assert kinds == ["phase", "problem", "latency", "tool_call"]
    assert "LatencyMeasured not recorded: data is not JSON-serializable" in problems[0]


async def test_the_database_failing_fails_the_batch_to_be_sent_again(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a value's fault: noting a problem would lose the action for good.
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    write = store._db.write

    async def failing(doing: str, work: Any) -> Any:
        if doing == "adding usage":
            raise StoreError("adding usage failed: OperationalError: server closed the connection")
        return await write(doing, work)

    monkeypatch.setattr(store._db, "write", failing)
    batch: list[Recordable] = [UsageReported("resp_1", Usage(1, 1, 0)), FinishCall("done")]
    with pytest.raises(StoreError) as failed:
        await record_batch(store, call, [(m, T0) for m in batch], ("a", len(batch)))
    assert type(failed.value) is StoreError
    assert await store.actions_recorded(call, "a") == 0
    monkeypatch.setattr(store._db, "write", write)
    await record_batch(store, call, [(m, T0) for m in batch], ("a", len(batch)))  # again
    problems, kinds = await problems_and_kinds(store, call)
    assert (problems, kinds) == ([], ["finished"])


async def test_an_agent_turn_ends_when_its_finish_or_cut_happened(store: CallStore) -> None:
    # The store's clock (conftest: March) is not the call's (June): a turn's end is the
    # action's time, as a caller turn's is, and a finish sent again moves nothing.
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    t0, s = datetime(2025, 6, 1, 9, 0, tzinfo=UTC), timedelta(seconds=1)
    batch: list[tuple[Recordable, datetime]] = [
        (AgentTurnStarted("a1"), t0),
        (AgentTranscriptGrew("a1", "Hello there.", 0), t0 + s),
        (AgentTurnFinished("a1", "Hello there."), t0 + 2 * s),
        (CallerTurnStarted("c1"), t0 + 3 * s),
        (CallerTurnTranscribed("c1", "Hi"), t0 + 4 * s),
        (AgentTurnStarted("a2"), t0 + 5 * s),
        (AgentTurnInterrupted("a2", 0, 100), t0 + 6 * s),
        (AgentTurnFinished("a3", "No start seen."), t0 + 7 * s),
    ]
    await record_batch(store, call, batch)
    await record_batch(store, call, [(AgentTurnFinished("a1", "Hello there."), t0 + 9 * s)])
    await record_batch(store, call, [(AgentTurnFinished("a2", "Long reply."), t0 + 9 * s)])
    detail = await store.get_call(call)
    assert detail is not None
    assert {t.item_id: (t.started_at, t.ended_at) for t in detail.transcript} == {
        "a1": (t0, t0 + 2 * s),
        "c1": (t0 + 3 * s, t0 + 4 * s),
        "a2": (t0 + 5 * s, t0 + 6 * s),  # the cut, not the finish after it
        "a3": (t0 + 7 * s, t0 + 7 * s),
    }


async def test_a_finished_call_writes_its_own_buffered_text_not_every_calls(
    db_url: str, store: CallStore
) -> None:
    # A finish puts the call's text on disk before it is acknowledged; the other calls'
    # buffered text waits for its own interval (one recorder serves many calls).
    ending, talking = [
        (await store.create_call(NewCall("outbound", "+15551230001", "+15559990000"))).id
        for _ in range(2)
    ]
    for call in (ending, talking):
        await record_batch(store, call, [(AgentTurnStarted("item_a"), T0)])
        await record_batch(store, call, [(AgentTranscriptGrew("item_a", "Written", 0), T0)])
        await store.grow_agent_turn(call, "item_a", " and buffered", 7)
    await record_batch(store, ending, [(FinishCall("stream_stopped"), T0)])
    reader = await CallStore.open(db_url)
    try:
        texts = {}
        for call in (ending, talking):
            detail = await reader.get_call(call)
            assert detail is not None
            texts[call] = [t.text for t in detail.transcript]
    finally:
        await reader.close()
    assert texts == {ending: ["Written and buffered"], talking: ["Written"]}


async def test_a_finished_call_closes_its_caller_turn_left_without_a_transcript(
    store: CallStore,
) -> None:
    # The media ended before the caller's words were transcribed: none will come, so the
    # reserved turn is untranscribed, not pending for ever (the call's status is not
    # terminal yet: the finish alone closes it).
    call = (await store.create_call(NewCall("inbound", "+15559990000", "+15551230001"))).id
    await record_batch(store, call, [(CallerTurnStarted("c1"), T0)])
    await record_batch(store, call, [(FinishCall("stream_stopped"), T0 + timedelta(seconds=1))])
    detail = await store.get_call(call)
    assert detail is not None
    assert not is_terminal(detail.call.status)
    assert [(t.item_id, t.state, t.text) for t in detail.transcript] == [
        ("c1", "untranscribed", None)
    ]


async def test_a_reply_cut_short_by_its_actors_death_is_not_counted_as_heard(
    store: CallStore,
) -> None:
    # The pool's word that the actor died ends the call (CallRecorder.actor_died): no cut
    # of the reply it was speaking will come. It is cut, nothing known heard, and the
    # recorder (one for many calls) holds nothing more of it.
    call = (await store.create_call(NewCall("outbound", "+15550001", "+15550002"))).id
    said = "Your order ships tomorrow and"
    started = [(AgentTurnStarted("it1"), T0), (AgentTranscriptGrew("it1", said, 0), T0)]
    await record_batch(store, call, started, ("x", 2))
    died = ProblemNoted("switchboard", "actor_failed", "died", fatal=True)
    end = T0 + timedelta(seconds=5)
    await record_batch(store, call, [(died, end), (FinishCall("actor_failed"), end)])
    await store.update_status(call, "completed", end)
    detail = await store.get_call(call)
    assert detail is not None
    [reply] = detail.transcript
    assert (reply.state, reply.text, reply.heard_text, reply.heard_ms) == (
        "interrupted",
        said,
        "",
        None,
    )
    assert reply.ended_at == end  # when the call ended, not when the recorder wrote it
    assert store._turns.live_text(call) == {}


async def test_a_terminal_status_recorded_closes_the_calls_buffered_replies(
    store: CallStore,
) -> None:
    # A web call's end is its status (the recorder forgets the call then): its buffered
    # text is written, and not kept.
    call = (await store.create_call(NewCall("outbound", "+15550001", "+15550002"))).id
    await record_batch(store, call, [(AgentTurnStarted("a1"), T0)])
    await record_batch(store, call, [(AgentTranscriptGrew("a1", "Written", 0), T0)])
    await store.grow_agent_turn(call, "a1", " and buffered", 7)
    await record_batch(store, call, [(CallStatusChanged("completed"), T0)])
    assert store._turns.live_text(call) == {}
    detail = await store.get_call(call)
    assert detail is not None
    assert [(t.state, t.text, t.heard_text, t.ended_at) for t in detail.transcript] == [
        ("interrupted", "Written and buffered", "", T0)
    ]
