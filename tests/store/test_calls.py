"""Calls, status, timeline, usage and listing, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from switchboard.errors import StoreError, StoreInputError
from switchboard.realtime_events import Usage
from switchboard.store import GPT_REALTIME, CallStore, NewCall, estimate_cost

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def outbound(to: str = "+15551230001", instruction: str = "Confirm the delivery.") -> NewCall:
    return NewCall("outbound", to, "+15559990000", instruction)


async def test_create_and_read_back_a_call(store: CallStore) -> None:
    new = NewCall(
        direction="outbound",
        to="+15551230001",
        from_="+15559990000",
        instruction="Book a table for two.",
        voice="marin",
        greeting="Hi, this is Ada.",
        metadata={"crm": {"lead": 42, "tags": ["vip"]}, "note": "ünïcode"},
        max_duration_s=600,
    )
    call = await store.create_call(new)
    assert len(call.id) == 26 and call.id.isalnum()
    assert call.status == "queued"
    assert call.created_at.tzinfo == UTC
    assert (call.to, call.from_, call.voice, call.greeting) == (
        new.to,
        new.from_,
        "marin",
        "Hi, this is Ada.",
    )
    detail = await store.get_call(call.id)
    assert detail is not None
    assert detail.call == call
    assert detail.call.metadata == {"crm": {"lead": 42, "tags": ["vip"]}, "note": "ünïcode"}
    assert (detail.timeline, detail.transcript) == ((), ())
    assert detail.usage == Usage(0, 0, 0)
    assert detail.cost_usd == 0
    assert call.duration_s is None
    assert await store.get_call("01NOSUCHCALL0000000000000") is None


async def test_call_ids_sort_by_creation(store: CallStore) -> None:
    ids = [(await store.create_call(outbound())).id for _ in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


async def test_twilio_sid_lookup(store: CallStore) -> None:
    call = await store.create_call(outbound())
    other = await store.create_call(outbound())
    assert await store.find_by_twilio_sid("CA" + "1" * 32) is None
    await store.set_twilio_sid(call.id, "CA" + "1" * 32)
    found = await store.find_by_twilio_sid("CA" + "1" * 32)
    assert found is not None and found.id == call.id and found.twilio_sid == "CA" + "1" * 32
    with pytest.raises(StoreError):
        await store.set_twilio_sid(other.id, "CA" + "1" * 32)  # one sid, one call
    with pytest.raises(StoreError, match="unknown call id"):
        await store.set_twilio_sid("nope", "CA" + "2" * 32)


async def test_status_moves_forward_and_terminal_is_final(store: CallStore) -> None:
    call = await store.create_call(outbound())
    await store.update_status(call.id, "initiated", t(1))
    await store.update_status(call.id, "ringing", t(2), {"SequenceNumber": "1"})
    await store.update_status(call.id, "in-progress", t(5))
    await store.update_status(call.id, "completed", t(65), {"CallDuration": "60"})
    await store.update_status(call.id, "ringing", t(3))  # late callback
    await store.update_status(call.id, "failed", t(70))
    detail = await store.get_call(call.id)
    assert detail is not None
    record = detail.call
    assert record.status == "completed"
    assert (record.answered_at, record.ended_at, record.duration_s) == (t(5), t(65), 60.0)
    statuses = [(e.data["status"], e.data["applied"], e.at) for e in detail.timeline]
    # Ordered by when they happened; the late ones kept but marked not applied.
    assert statuses == [
        ("initiated", True, t(1)),
        ("ringing", True, t(2)),
        ("ringing", False, t(3)),
        ("in-progress", True, t(5)),
        ("completed", True, t(65)),
        ("failed", False, t(70)),
    ]
    assert detail.timeline[1].data["detail"] == {"SequenceNumber": "1"}


async def test_the_same_status_report_again_is_noted_once(store: CallStore) -> None:
    call = await store.create_call(outbound())
    assert await store.update_status(call.id, "in-progress", t(5)) is True
    assert await store.update_status(call.id, "completed", t(65)) is True
    # A resent report (a retried callback, a recorder's batch sent again): not noted again.
    assert await store.update_status(call.id, "completed", t(65)) is False
    assert await store.update_status(call.id, "in-progress", t(5)) is False
    # Not applied either, but new: kept.
    assert await store.update_status(call.id, "completed", t(66)) is False
    detail = await store.get_call(call.id)
    assert detail is not None
    statuses = [(e.data["status"], e.data["applied"], e.at) for e in detail.timeline]
    assert statuses == [
        ("in-progress", True, t(5)),
        ("completed", True, t(65)),
        ("completed", False, t(66)),
    ]


async def test_twilios_report_sent_again_is_known_by_its_sequence_number(
    store: CallStore,
) -> None:
    # Stamped when it arrives (within its Timestamp's second), a resent callback's time
    # differs from the first's: its SequenceNumber is what says it is the same report.
    call = await store.create_call(outbound())
    assert await store.update_status(call.id, "completed", t(65), {"sequence": 3}) is True
    assert await store.update_status(call.id, "completed", t(65.6), {"sequence": 3}) is False
    # Another report of the same status (another number) is kept, as is one with none.
    assert await store.update_status(call.id, "completed", t(66), {"sequence": 4}) is False
    assert await store.update_status(call.id, "completed", t(67)) is False
    detail = await store.get_call(call.id)
    assert detail is not None
    seen = [(e.data["status"], e.at, e.data.get("detail")) for e in detail.timeline]
    assert seen == [
        ("completed", t(65), {"sequence": 3}),
        ("completed", t(66), {"sequence": 4}),
        ("completed", t(67), None),
    ]


async def test_out_of_order_callbacks(store: CallStore) -> None:
    call = await store.create_call(outbound())
    await store.update_status(call.id, "completed", t(65))
    await store.update_status(call.id, "in-progress", t(5))
    await store.update_status(call.id, "ringing", t(2))
    record = (await store.get_call(call.id)).call  # type: ignore[union-attr]
    assert (record.status, record.answered_at, record.ended_at) == ("completed", t(5), t(65))


async def test_unanswered_call_has_no_duration(store: CallStore) -> None:
    call = await store.create_call(outbound())
    await store.update_status(call.id, "ringing", t(1))
    await store.update_status(call.id, "no-answer", t(31))
    record = (await store.get_call(call.id)).call  # type: ignore[union-attr]
    assert (record.status, record.answered_at, record.ended_at) == ("no-answer", None, t(31))
    assert record.duration_s is None


async def test_timeline_is_ordered_by_time_then_arrival(store: CallStore) -> None:
    call = await store.create_call(outbound())
    await store.append_event(call.id, "phase", t(3), {"old": "greeting", "new": "listening"})
    await store.append_event(call.id, "tool_call", t(1), {"name": "lookup"})
    await store.append_event(call.id, "latency", t(3), {"first_audio_ms": 420})
    await store.append_event(call.id, "problem", t(2), {"reason": "x", "items": (1, 2)})
    detail = await store.get_call(call.id)
    assert detail is not None
    assert [(e.kind, e.at) for e in detail.timeline] == [
        ("tool_call", t(1)),
        ("problem", t(2)),
        ("phase", t(3)),
        ("latency", t(3)),
    ]
    assert detail.timeline[1].data == {"reason": "x", "items": [1, 2]}


async def test_usage_is_summed_once_per_response_and_priced(store: CallStore) -> None:
    call = await store.create_call(outbound())
    first = Usage(253, 132, 121, 13, 119, 64, 100, 21)
    second = Usage(1000, 600, 400, 500, 100, 300, 350, 50)
    await store.add_usage(call.id, "resp_1", first)
    await store.add_usage(call.id, "resp_2", second)
    await store.add_usage(call.id, "resp_1", first)  # a replayed response.done
    other = await store.create_call(outbound())
    await store.add_usage(other.id, "resp_1", second)  # same response id, other call
    detail = await store.get_call(call.id)
    assert detail is not None
    assert detail.usage == Usage(1253, 732, 521, 513, 219, 364, 450, 71)
    assert detail.cost_usd == estimate_cost(detail.usage, GPT_REALTIME)
    assert detail.cost_usd > Decimal(0)


async def test_cost_uses_the_configured_prices(db_url: str) -> None:
    from switchboard.store import PriceTable

    free_audio = PriceTable(*(Decimal(0),) * 2, Decimal(1), Decimal(1), Decimal(0), Decimal(0))
    store = await CallStore.open(db_url, prices=free_audio)
    try:
        call = await store.create_call(outbound())
        await store.add_usage(
            call.id, "r", Usage(3_000_000, 2_000_000, 1_000_000, 1, 2_000_000, 0, 7, 1_000_000)
        )
        detail = await store.get_call(call.id)
        assert detail is not None and detail.cost_usd == Decimal(3)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        (lambda s, c: s.update_status(c, "ringing", T0), "unknown call id 'nope'"),
        (lambda s, c: s.append_event(c, "phase", T0, {}), "unknown call id 'nope'"),
        (lambda s, c: s.add_usage(c, "resp", Usage(1, 1, 0)), "unknown call id 'nope'"),
        (lambda s, c: s.reserve_caller_turn(c, "item_1", T0), "unknown call id 'nope'"),
        (lambda s, c: s.record_caller_turn(c, "item_1", "hi", T0), "unknown call id 'nope'"),
        (lambda s, c: s.start_agent_turn(c, "item_2", T0), "unknown call id 'nope'"),
        (lambda s, c: s.grow_agent_turn(c, "item_2", "Hel"), "unknown call id 'nope'"),
        (lambda s, c: s.finish_agent_turn(c, "item_2", "Hello", T0), "unknown call id 'nope'"),
        (lambda s, c: s.cut_agent_turn(c, "item_2", 10, 20, T0), "unknown call id 'nope'"),
    ],
)
async def test_unknown_call_ids_are_store_errors(store: CallStore, operation, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StoreError, match=message):
        await operation(store, "nope")


async def test_bad_values_are_store_input_errors(store: CallStore) -> None:
    call = await store.create_call(outbound())
    naive = datetime(2025, 3, 1, 12, 0)
    cases = [
        (store.update_status(call.id, "answered", T0), "unknown call status 'answered'"),
        (store.update_status(call.id, "ringing", naive), "timezone-aware"),
        (store.append_event(call.id, "phase", naive, {}), "timezone-aware"),
        (store.append_event(call.id, "", T0, {}), "kind must be"),
        (store.append_event(call.id, "x" * 33, T0, {}), "kind must be"),
        (store.append_event(call.id, "phase", T0, {"at": T0}), "not JSON-serializable"),
        (store.append_event(call.id, "phase", T0, {"x": float("nan")}), "not JSON-serializable"),
        (store.append_event(call.id, "phase", T0, ["x"]), "must be a JSON object"),  # type: ignore[arg-type]
        (store.create_call(NewCall("sideways", "+1", "+2")), "direction"),  # type: ignore[arg-type]
        (store.create_call(NewCall("inbound", "", "+2")), "to must be"),
        (store.create_call(NewCall("inbound", "+1", "+2", max_duration_s=0)), "positive"),
        (store.create_call(NewCall("inbound", "+1", "+2", metadata={"f": object()})), "metadata"),
        (store.cut_agent_turn(call.id, "item", -1, 10, T0), "heard_ms"),
        (store.add_usage(call.id, "r", Usage(-1, 0, 0)), "total_tokens"),
        (store.list_calls(limit=0), "limit"),
        (store.list_calls(status="answered"), "unknown call status"),
        (store.list_calls(cursor="!!not-a-cursor"), "invalid list cursor"),
        (store.list_calls(created_after=naive), "timezone-aware"),
        # Ids are refused, not repaired, whatever the backend would have stored.
        (store.reserve_caller_turn(call.id, "item\x00", T0), "item_id contains a NUL"),
        (store.grow_agent_turn(call.id, "item\x00", "hi"), "item_id contains a NUL"),
        (store.finish_agent_turn(call.id, "it\nem", "hi", T0), r"control character \(U\+000A\)"),
        (store.cut_agent_turn(call.id, "item\x85", 1, 2, T0), "control character"),
        (store.add_usage(call.id, "resp\x7f", Usage(1, 1, 0)), "response_id contains"),
        (store.set_twilio_sid(call.id, "CA\ud83d"), "lone UTF-16 surrogate"),
        (store.create_call(NewCall("inbound", "+1\t", "+2")), "to contains"),
        (store.append_event(call.id, "pha\x00se", T0, {}), "kind contains a NUL"),
        (store.finish_agent_turn(call.id, "item", "hi", naive), "timezone-aware"),
    ]
    for operation, message in cases:
        with pytest.raises(StoreInputError, match=message):
            await operation
    record = (await store.get_call(call.id)).call  # type: ignore[union-attr]
    assert record.status == "queued"  # nothing half-applied


async def test_a_turn_id_cannot_change_role(store: CallStore) -> None:
    call = await store.create_call(outbound())
    await store.reserve_caller_turn(call.id, "item_1", T0)
    # The peer's ids, not the database failing: sending them again cannot help.
    with pytest.raises(StoreInputError, match="is a caller turn, not agent"):
        await store.start_agent_turn(call.id, "item_1", T0)
    with pytest.raises(StoreInputError, match="is a caller turn, not agent"):
        await store.finish_agent_turn(call.id, "item_1", "x", T0)


async def test_the_newest_timeline_event_says_when_a_call_last_moved(store: CallStore) -> None:
    call = await store.create_call(outbound())
    other = await store.create_call(outbound())
    assert await store.last_event(call.id) is None
    await store.append_event(call.id, "phase", t(5), {"new": "listening"})
    first = await store.last_event(call.id)
    await store.append_event(call.id, "phase", t(3), {"new": "idle"})  # out of order
    await store.append_event(other.id, "phase", t(9), {"new": "idle"})
    last = await store.last_event(call.id)
    assert first is not None and last is not None
    newest, written_last = last
    assert newest == t(5) and newest.tzinfo is not None
    assert written_last > first[1]  # it moved, though its newest time did not
