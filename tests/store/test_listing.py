"""Listing calls: filters, search, keyset pagination, on SQLite and PostgreSQL."""

from __future__ import annotations

from base64 import urlsafe_b64decode, urlsafe_b64encode
from datetime import UTC, datetime

import pytest

from switchboard.errors import StoreInputError
from switchboard.store import CallRecord, CallStore, NewCall

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def all_pages(store: CallStore, limit: int, **filters: object) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = await store.list_calls(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        pages.append([c.id for c in page.calls])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def make(store: CallStore, count: int, **fields: object) -> list[CallRecord]:
    base: dict[str, object] = {
        "direction": "outbound",
        "to": "+15551230001",
        "from_": "+15559990000",
    }
    return [await store.create_call(NewCall(**(base | fields))) for _ in range(count)]  # type: ignore[arg-type]


async def test_keyset_pages_cover_every_call_once_newest_first(store: CallStore) -> None:
    calls = await make(store, 7)
    newest_first = [c.id for c in reversed(calls)]
    pages = await all_pages(store, limit=3)
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
    assert await all_pages(store, limit=7) == [newest_first]
    assert await all_pages(store, limit=50) == [newest_first]


async def test_pages_stay_put_when_calls_are_added_meanwhile(store: CallStore) -> None:
    calls = await make(store, 4)
    first = await store.list_calls(limit=2)
    await make(store, 3)  # newer calls arrive while the console pages
    second = await store.list_calls(limit=2, cursor=first.next_cursor)
    assert [c.id for c in first.calls + second.calls] == [c.id for c in reversed(calls)]
    assert second.next_cursor is None


async def test_calls_created_in_the_same_instant_are_paged_by_id(
    db_url: str, clock: object
) -> None:
    store = await CallStore.open(db_url, now=lambda: T0)
    try:
        calls = await make(store, 5)
        pages = await all_pages(store, limit=2)
        paged = [call for page in pages for call in page]
        assert paged == sorted((c.id for c in calls), reverse=True)
    finally:
        await store.close()


async def test_filters(store: CallStore) -> None:
    first = await make(store, 2, to="+15550000001")
    inbound = await make(store, 1, direction="inbound", to="+15550000002")
    later = await make(store, 2, to="+15550000003")
    await store.update_status(later[0].id, "completed", T0)

    async def ids(**filters: object) -> list[str]:
        return [call for page in await all_pages(store, limit=2, **filters) for call in page]

    assert await ids(direction="inbound") == [inbound[0].id]
    assert await ids(to="+15550000001") == [first[1].id, first[0].id]
    assert await ids(status="completed") == [later[0].id]
    assert await ids(status="queued", direction="outbound") == [
        later[1].id,
        first[1].id,
        first[0].id,
    ]
    # created_after inclusive, created_before exclusive.
    window = {"created_after": first[1].created_at, "created_before": later[1].created_at}
    assert await ids(**window) == [later[0].id, inbound[0].id, first[1].id]
    assert await ids(to="+19999999999") == []


async def test_search_matches_numbers_instructions_and_transcripts(store: CallStore) -> None:
    by_number = (await make(store, 1, to="+15557654321"))[0]
    by_instruction = (await make(store, 1, instruction="Ask about the PARCEL delivery"))[0]
    by_transcript = (await make(store, 1))[0]
    by_agent = (await make(store, 1))[0]
    await store.record_caller_turn(by_transcript.id, "item_1", "Where is my parcel?", T0)
    await store.start_agent_turn(by_agent.id, "item_2", T0)
    await store.finish_agent_turn(by_agent.id, "item_2", "Your 100% refund is on its way", T0)

    async def found(search: str) -> set[str]:
        return {c.id for c in (await store.list_calls(search=search)).calls}

    assert await found("7654321") == {by_number.id}
    assert await found("parcel") == {by_instruction.id, by_transcript.id}
    assert await found("100%") == {by_agent.id}
    assert await found("100_") == set()  # LIKE wildcards are taken literally
    assert await found("%") == {by_agent.id}
    assert await found("nothing like this") == set()
    page = await store.list_calls(search="parcel", limit=1)
    rest = await store.list_calls(search="parcel", limit=1, cursor=page.next_cursor)
    assert [c.id for c in page.calls + rest.calls] == [by_transcript.id, by_instruction.id]


async def test_search_folds_case_beyond_ascii(store: CallStore) -> None:
    french = (await make(store, 1, instruction="Réserver à l'ÉCOLE de Zürich, Hauptstraße"))[0]
    greek = (await make(store, 1))[0]
    await store.record_caller_turn(greek.id, "item_1", "ΟΔΥΣΣΕΑΣ speaking", T0)

    async def found(search: str) -> set[str]:
        return {c.id for c in (await store.list_calls(search=search)).calls}

    assert await found("école") == {french.id}
    assert await found("ZÜRICH") == {french.id}
    assert await found("οδυσσε") == {greek.id}
    assert await found("ÉCOLÉ") == set()  # folded, not stripped of accents
    assert await found("ZURICH") == set()
    assert await found("ss") == set()  # lowered as PostgreSQL does: ß is not ss


def naive_cursor(cursor: str) -> str:
    """``cursor`` with its timestamp's offset taken off."""
    raw = urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    stamp, call_id = raw.split("|", 1)
    naive = datetime.fromisoformat(stamp).replace(tzinfo=None).isoformat()
    return urlsafe_b64encode(f"{naive}|{call_id}".encode()).decode().rstrip("=")


async def test_a_cursor_whose_time_has_no_timezone_is_refused(store: CallStore) -> None:
    await make(store, 3)
    page = await store.list_calls(limit=1)
    assert page.next_cursor is not None
    with pytest.raises(StoreInputError, match="invalid list cursor"):
        await store.list_calls(limit=1, cursor=naive_cursor(page.next_cursor))
