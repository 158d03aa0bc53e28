"""The call API over ASGI: placing, listing, reading and hanging up calls; auth; bad input."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import httpx
import pytest
import pytest_asyncio

from serve import api
from serve.api import MAX_BODY_BYTES, build_app
from serve.auth import tokens_from_settings
from serve.call_journal import record_failure
from serve.events import EventHub
from serve.ports import AppDeps
from serve.schemas import MAX_INSTRUCTION_CHARS, MAX_METADATA_BYTES, CallStatus
from serve.testing import FakeCallControl
from switchboard.errors import (
    CallCanceled,
    ConfigError,
    RealtimeServiceError,
    ServiceError,
    StoreError,
    TwilioServiceError,
)
from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore, NewCall
from switchboard.store.status import STATUSES

# Fixtures and tests share one loop per test.
pytestmark = pytest.mark.asyncio(loop_scope="function")

TOKEN = "test-token-1"
OTHER_TOKEN = "test-token-2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FROM = "+15550001111"
TO = "+15551234567"
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.wall = START

    def now(self) -> datetime:
        self.wall += timedelta(seconds=1)
        return self.wall


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "twilio_auth_token": "twilio-secret",
        "twilio_from_number": FROM,
        "public_url": "https://calls.example.com",
        "max_call_duration_s": 1800.0,
    }
    return Settings.model_validate(values | overrides)


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[CallStore]:
    opened = await CallStore.open(f"sqlite:///{tmp_path}/calls.db", now=Clock().now)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def control() -> FakeCallControl:
    return FakeCallControl()


@pytest.fixture
def hub() -> EventHub:
    return EventHub()


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest_asyncio.fixture(loop_scope="function")
async def client(
    settings: Settings, store: CallStore, control: FakeCallControl, hub: EventHub
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(AppDeps(settings, store, control, hub, (TOKEN, OTHER_TOKEN)))
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def messages(response: httpx.Response) -> dict[str, str]:
    """FastAPI's 422 details as {field: message}."""
    assert response.status_code == 422, response.text
    return {str(d["loc"][-1]): d["msg"] for d in response.json()["detail"]}


# -- placing calls ---------------------------------------------------------------


async def test_post_calls_records_then_places_the_call(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    events = hub.subscribe(None)
    body = {
        "to": TO,
        "instruction": "Book a cleaning for Jane",
        "voice": "marin",
        "greeting": "Hello!",
        "metadata": {"customer": 42, "tags": ["vip"]},
        "max_duration_s": 600,
    }
    r = await client.post("/calls", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    call = r.json()
    assert r.headers["location"] == f"/calls/{call['id']}"
    assert call["status"] == "queued" and call["direction"] == "outbound"
    assert (call["to"], call["from"], call["voice"], call["max_duration_s"]) == (
        TO,
        FROM,
        "marin",
        600,
    )
    assert call["metadata"] == {"customer": 42, "tags": ["vip"]}
    [placed] = control.placed
    assert placed.id == call["id"] and placed.instruction == "Book a cleaning for Jane"
    stored = await store.get_call(call["id"])
    assert stored is not None and stored.call.greeting == "Hello!"
    created = await anext(events)
    assert (created["type"], created["call_id"], created["to"]) == ("call.created", call["id"], TO)


async def test_post_calls_returns_what_place_already_changed(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl
) -> None:
    async def place(call: object) -> None:
        await store.set_twilio_sid(call.id, "CA" + "1" * 32)  # type: ignore[attr-defined]

    control.place = place  # type: ignore[method-assign]
    r = await client.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["twilio_sid"] == "CA" + "1" * 32


async def test_explicit_from_overrides_the_default(
    client: httpx.AsyncClient, control: FakeCallControl
) -> None:
    r = await client.post(
        "/calls", json={"to": TO, "from": "+442071838750", "instruction": "hi"}, headers=AUTH
    )
    assert r.status_code == 201 and r.json()["from"] == "+442071838750"
    assert control.placed[0].from_ == "+442071838750"


async def test_missing_from_without_a_default_is_422(
    store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    app = build_app(AppDeps(make_settings(twilio_from_number=None), store, control, hub, (TOKEN,)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://testserver"
    ) as c:
        r = await c.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert "TWILIO_FROM_NUMBER" in messages(r)["from"]
    assert control.placed == [] and (await store.list_calls()).calls == ()


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("5551234567", "to must start with + and the country code"),
        ("+1 555 123 4567", "without spaces or punctuation: +15551234567"),
        ("+1-555-123-4567", "without spaces or punctuation: +15551234567"),
        ("+1555", "to is not a possible phone number"),
        ("+abc", "to is not a phone number in E.164 form"),
        ("+" + "1" * 40, "at most 32 characters"),
    ],
)
async def test_to_must_be_e164(
    client: httpx.AsyncClient, control: FakeCallControl, to: str, expected: str
) -> None:
    r = await client.post("/calls", json={"to": to, "instruction": "hi"}, headers=AUTH)
    assert expected in messages(r)["to"]
    assert control.placed == []


async def test_from_must_be_e164_too(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/calls", json={"to": TO, "from": "0123", "instruction": "hi"}, headers=AUTH
    )
    assert messages(r)["from"].startswith("from must start with +")


@pytest.mark.parametrize(
    ("patch", "field", "expected"),
    [
        ({"instruction": ""}, "instruction", "at least 1 character"),
        ({"instruction": "   "}, "instruction", "instruction must not be blank"),
        ({"instruction": "x" * (MAX_INSTRUCTION_CHARS + 1)}, "instruction", "at most 20000"),
        ({"voice": "robot"}, "voice", "voice 'robot' is unknown; choose one of: alloy"),
        ({"metadata": ["not", "an", "object"]}, "metadata", "valid dictionary"),
        ({"metadata": {"blob": "x" * MAX_METADATA_BYTES}}, "metadata", "metadata is too large"),
        ({"max_duration_s": 0}, "max_duration_s", "greater than or equal to 1"),
        ({"max_duration_s": 1801}, "max_duration_s", "at most 1800 s (MAX_CALL_DURATION_S)"),
        ({"greeting": ""}, "greeting", "at least 1 character"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
        ({"max_duration_s": True}, "max_duration_s", "valid integer"),  # not 1 s
        ({"max_duration_s": "600"}, "max_duration_s", "valid integer"),
        ({"instruction": "a\u0000b"}, "instruction", "NUL character at position 1"),
        ({"greeting": "hi\u0000"}, "greeting", "NUL character at position 2"),
        ({"metadata": {"note": ["ok", "\u0000"]}}, "metadata", "metadata.note[1] contains a NUL"),
        ({"metadata": {"\u0000": 1}}, "metadata", "a key in metadata contains a NUL"),
    ],
)
async def test_bad_fields_are_422_naming_the_field(
    client: httpx.AsyncClient,
    control: FakeCallControl,
    patch: dict[str, object],
    field: str,
    expected: str,
) -> None:
    body = {"to": TO, "instruction": "hi"} | patch
    r = await client.post("/calls", json=body, headers=AUTH)
    assert expected in messages(r)[field]
    assert control.placed == []


async def test_a_lone_surrogate_is_refused_not_stored_nor_echoed(
    client: httpx.AsyncClient, control: FakeCallControl, store: CallStore
) -> None:
    # A client cut a string inside an emoji: valid JSON, not Unicode text. Stored, it
    # would fail every later response holding it (and a retry would dial again).
    for raw, field, expected in (
        (b'"metadata": {"note": "\\ud83d"}', "metadata", "metadata.note contains a lone"),
        (b'"greeting": "hi \\ud83d"', "greeting", "lone UTF-16 surrogate (U+D83D) at"),
        (b'"voice": "\\udfff"', "voice", "lone UTF-16 surrogate (U+DFFF)"),
    ):
        body = b'{"to": "+15551234567", "instruction": "hi", ' + raw + b"}"
        r = await client.post(
            "/calls", content=body, headers=AUTH | {"Content-Type": "application/json"}
        )
        assert expected in messages(r)[field]
    assert control.placed == []
    assert (await store.list_calls()).calls == ()
    assert (await client.get("/calls", headers=AUTH)).status_code == 200


async def test_dates_out_of_range_in_utc_are_422(client: httpx.AsyncClient) -> None:
    for query in (
        "created_after=9999-12-31T23:59:59-23:59",
        "created_before=0001-01-01T00:00:00%2B01:00",
        "cursor=MDAwMS0wMS0wMVQwMDowMDowMCsxNDowMHx4",  # "0001-01-01T00:00:00+14:00|x"
    ):
        r = await client.get(f"/calls?{query}", headers=AUTH)
        assert r.status_code == 422, (query, r.text)
        assert query.split("=")[0] in messages(r)


async def test_nan_in_metadata_is_refused(client: httpx.AsyncClient) -> None:
    raw = b'{"to": "+15551234567", "instruction": "hi", "metadata": {"x": NaN}}'
    r = await client.post(
        "/calls", content=raw, headers=AUTH | {"Content-Type": "application/json"}
    )
    assert "NaN" in messages(r)["metadata"]


async def test_create_call_alias_keeps_the_original_contract(
    client: httpx.AsyncClient, control: FakeCallControl
) -> None:
    r = await client.post(
        "/create-call", json={"userPhone": TO, "instruction": "rap battle"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    assert (r.json()["to"], r.json()["from"]) == (TO, FROM)
    assert control.placed[0].instruction == "rap battle"
    blank = await client.post(
        "/create-call", json={"userPhone": TO, "instruction": "  "}, headers=AUTH
    )
    assert "instruction must not be blank" in messages(blank)["instruction"]
    bad = await client.post(
        "/create-call", json={"userPhone": "555", "instruction": "x"}, headers=AUTH
    )
    assert messages(bad)["userPhone"].startswith("userPhone must start with +")
    missing = await client.post("/create-call", json={"userPhone": TO}, headers=AUTH)
    assert messages(missing)["instruction"] == "Field required"


async def test_alias_needs_the_token_too(client: httpx.AsyncClient) -> None:
    r = await client.post("/create-call", json={"userPhone": TO, "instruction": "x"})
    assert r.status_code == 401


async def test_twilio_refusal_is_502_and_the_call_is_recorded_failed(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    error = TwilioServiceError("Unable to create record: The 'To' number is not valid", code=21211)
    control.place_error = error
    events = hub.subscribe(None)
    r = await client.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["error"] == "TwilioServiceError" and body["code"] == 21211
    assert "'To' number is not valid" in body["detail"]
    assert body["call"]["status"] == "failed"
    detail = await store.get_call(body["call"]["id"])
    assert detail is not None and detail.call.status == "failed"
    problems = [e.data for e in detail.timeline if e.kind == "problem"]
    assert problems == [
        {
            "source": "placing",
            "reason": "TwilioServiceError",
            "message": "Unable to create record: The 'To' number is not valid",
            "fatal": True,
            "code": 21211,
        }
    ]
    assert [e.data["status"] for e in detail.timeline if e.kind == "status"] == ["failed"]
    assert [m["type"] for m in (await anext(events), await anext(events))] == [
        "call.created",
        "call.status",
    ]


async def test_a_call_hung_up_before_its_dial_is_409_and_recorded_canceled(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    # POST /calls/{id}/hangup from another client while the call's actor was starting.
    control.place_error = CallCanceled("call x was hung up (api) before it was dialed")
    events = hub.subscribe(None)
    r = await client.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["error"] == "CallCanceled" and "before it was dialed" in body["detail"]
    assert body["call"]["status"] == "canceled"
    detail = await store.get_call(body["call"]["id"])
    assert detail is not None and detail.call.status == "canceled"
    assert [e.kind for e in detail.timeline if e.kind == "problem"] == []  # not a failure
    created, status_event = await anext(events), await anext(events)
    assert (created["type"], status_event["type"]) == ("call.created", "call.status")
    assert status_event["status"] == "canceled"


async def test_a_failure_after_the_call_ended_says_it_changed_nothing(
    store: CallStore, control: FakeCallControl, hub: EventHub, settings: Settings
) -> None:
    call = await store.create_call(NewCall("outbound", TO, "+15005550006"))
    await store.update_status(call.id, "completed", datetime.now(UTC))
    deps = AppDeps(settings, store, control, hub, tokens_from_settings(settings))
    events = hub.subscribe(call.id)
    await record_failure(deps, call.id, "hanging up", TwilioServiceError("gone"))
    published = await anext(events)
    detail = await store.get_call(call.id)
    assert detail is not None and detail.call.status == "completed"
    stored = [e.data["applied"] for e in detail.timeline if e.kind == "status"]
    assert stored == [True, False]
    assert (published["status"], published["applied"]) == ("failed", False)


# -- web calls ---------------------------------------------------------------------


async def test_a_web_call_is_recorded_then_started_and_the_browser_gets_its_ticket(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    events = hub.subscribe(None)
    body = {"instruction": "Be Ava.", "voice": "cedar", "greeting": "Hi!", "metadata": {"k": 1}}
    r = await client.post("/calls/web", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    out = r.json()
    (started,) = control.web
    assert out["call"]["id"] == started.id and r.headers["location"] == f"/calls/{started.id}"
    assert (out["media_url"], out["call_sid"], out["stream_token"]) == (
        f"ws://127.0.0.1/media/{started.id}",
        "CA" + "0" * 32,
        "web-token",
    )
    assert out["call"]["direction"] == "web" and out["call"]["voice"] == "cedar"
    assert (started.direction, started.instruction, started.greeting, started.metadata) == (
        "web",
        "Be Ava.",
        "Hi!",
        {"k": 1},
    )
    assert control.placed == []  # nothing dials Twilio
    created = await anext(events)
    assert (created["type"], created["direction"]) == ("call.created", "web")
    listed = await client.get("/calls", params={"direction": "web"}, headers=AUTH)
    assert [c["id"] for c in listed.json()["calls"]] == [started.id]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "instruction"),
        ({"instruction": "  "}, "instruction"),
        ({"instruction": "x", "voice": "robot"}, "voice"),
        ({"instruction": "x", "to": TO}, "to"),
        ({"instruction": "x", "max_duration_s": 3600}, "max_duration_s"),
    ],
)
async def test_bad_web_calls_are_422_naming_the_field(
    client: httpx.AsyncClient, control: FakeCallControl, body: dict[str, object], field: str
) -> None:
    r = await client.post("/calls/web", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert control.web == []


async def test_a_web_call_no_actor_can_take_is_502_and_recorded_failed(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl
) -> None:
    control.web_error = ServiceError("no call actor could take the call: pool is gone")
    r = await client.post("/calls/web", json={"instruction": "x"}, headers=AUTH)
    assert r.status_code == 502
    body = r.json()
    assert body["error"] == "ServiceError" and "pool is gone" in body["detail"]
    detail = await store.get_call(body["call"]["id"])
    assert detail is not None and (detail.call.status, detail.call.direction) == ("failed", "web")


async def test_other_service_errors_are_502_without_a_code(
    client: httpx.AsyncClient, control: FakeCallControl
) -> None:
    control.place_error = RealtimeServiceError("model session refused: rate limited")
    r = await client.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert r.status_code == 502
    assert r.json()["error"] == "RealtimeServiceError" and r.json()["code"] is None


async def test_a_bug_in_place_is_a_json_500_and_the_call_does_not_stay_queued(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl
) -> None:
    control.place_error = RuntimeError("boom")
    r = await client.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert r.status_code == 500 and "internal error" in r.json()["detail"]
    [call] = (await store.list_calls()).calls
    assert call.status == "failed"


# -- reading calls ---------------------------------------------------------------


async def seed(store: CallStore, n: int, **kwargs: object) -> list[str]:
    ids = []
    for i in range(n):
        values: dict[str, object] = {
            "direction": "outbound",
            "to": f"+1555000{i:04d}",
            "from_": FROM,
            "instruction": f"call number {i}",
        } | kwargs
        ids.append((await store.create_call(NewCall(**values))).id)  # type: ignore[arg-type]
    return ids


async def test_list_pages_with_a_cursor(client: httpx.AsyncClient, store: CallStore) -> None:
    ids = await seed(store, 5)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await client.get("/calls", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [c["id"] for c in page["calls"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == ids[::-1]  # newest first, each call once


async def test_list_filters(client: httpx.AsyncClient, store: CallStore) -> None:
    outbound = await seed(store, 3)
    inbound = await seed(store, 1, direction="inbound", instruction="")
    await store.update_status(outbound[0], "completed", START + timedelta(hours=1))

    async def ids(**params: str | int) -> list[str]:
        r = await client.get("/calls", params=params, headers=AUTH)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["calls"]]

    assert await ids(status="completed") == [outbound[0]]
    assert await ids(direction="inbound") == inbound
    assert await ids(to="+15550000001") == [outbound[1]]
    assert await ids(search="NUMBER 2") == [outbound[2]]
    # The clock steps one second per call: seconds 1..4 after START.
    after = (START + timedelta(seconds=2)).isoformat()
    before = (START + timedelta(seconds=4)).isoformat()
    assert await ids(created_after=after, created_before=before) == outbound[1:][::-1]


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ({"status": "finished"}, "status", "'queued'"),
        ({"direction": "sideways"}, "direction", "'outbound', 'inbound' or 'web'"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 1000}, "limit", "less than or equal to 200"),
        ({"created_after": "2026-01-01T00:00:00"}, "created_after", "timezone"),
        ({"created_before": "yesterday"}, "created_before", "valid datetime"),
        ({"cursor": "not-a-cursor"}, "cursor", "not a cursor this API returned"),
        ({"search": ""}, "search", "at least 1 character"),
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str | int], field: str, expected: str
) -> None:
    r = await client.get("/calls", params=params, headers=AUTH)
    assert expected in messages(r)[field]


async def test_get_call_has_timeline_transcript_usage_and_cost(
    client: httpx.AsyncClient, store: CallStore
) -> None:
    from switchboard.realtime_events import Usage

    [call_id] = await seed(store, 1)
    t = START + timedelta(minutes=5)
    await store.update_status(call_id, "in-progress", t)
    await store.start_agent_turn(call_id, "agent1", t)
    await store.finish_agent_turn(
        call_id, "agent1", "Hello, this is the dental office.", t + timedelta(seconds=1)
    )
    await store.reserve_caller_turn(call_id, "caller1", t + timedelta(seconds=2), "agent1")
    await store.record_caller_turn(call_id, "caller1", "Hi!", t + timedelta(seconds=3))
    await store.start_agent_turn(call_id, "agent2", t + timedelta(seconds=4), "caller1")
    await store.finish_agent_turn(
        call_id, "agent2", "We have an opening on Tuesday at four.", t + timedelta(seconds=5)
    )
    await store.cut_agent_turn(call_id, "agent2", 800, 3000, t + timedelta(seconds=6))
    await store.add_usage(call_id, "resp1", Usage(100, 40, 60, 30, 10, 0, 50, 10))
    r = await client.get(f"/calls/{call_id}", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "in-progress" and body["answered_at"] is not None
    assert [(e["kind"], e["data"]["status"]) for e in body["timeline"]] == [
        ("status", "in-progress")
    ]
    turns = body["transcript"]
    assert [(t["item_id"], t["role"]) for t in turns] == [
        ("agent1", "agent"),
        ("caller1", "caller"),
        ("agent2", "agent"),
    ]
    cut = turns[2]
    assert cut["interrupted"] is True and cut["state"] == "interrupted"
    assert cut["text"] == "We have an opening on Tuesday at four."
    assert cut["heard_ms"] == 800 and cut["generated_ms"] == 3000
    assert cut["heard_text"] and cut["text"].startswith(cut["heard_text"].rstrip("…. "))
    assert body["usage"]["total_tokens"] == 100
    assert float(body["cost_usd"]) > 0


async def test_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/calls/01NOPE", headers=AUTH)
    assert r.status_code == 404 and "unknown call id" in r.json()["detail"]


# -- hanging up ------------------------------------------------------------------


async def test_hangup_a_live_call(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    [call_id] = await seed(store, 1)
    events = hub.subscribe(call_id)
    r = await client.post(f"/calls/{call_id}/hangup", headers=AUTH)
    assert r.status_code == 202 and r.json() == {"id": call_id, "hangup": "requested"}
    assert control.hung_up == [call_id]
    detail = await store.get_call(call_id)
    assert detail is not None
    assert [(e.kind, e.data) for e in detail.timeline] == [("hangup_requested", {"by": "api"})]
    assert (await anext(events))["type"] == "call.hangup_requested"


async def test_hangup_errors(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl
) -> None:
    unknown = await client.post("/calls/01NOPE/hangup", headers=AUTH)
    assert unknown.status_code == 404
    ended, idle = await seed(store, 2)
    await store.update_status(ended, "completed", START + timedelta(hours=1))
    r = await client.post(f"/calls/{ended}/hangup", headers=AUTH)
    assert r.status_code == 409 and "already ended (completed)" in r.json()["detail"]
    assert control.hung_up == []  # not even asked
    control.live = False
    r = await client.post(f"/calls/{idle}/hangup", headers=AUTH)
    assert r.status_code == 409 and "no longer live" in r.json()["detail"]


async def test_a_hang_up_tells_the_control_whether_the_call_is_being_placed(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl
) -> None:
    # A queued call may have no actor yet: the pool is to refuse it one when it asks.
    queued, ringing = await seed(store, 2)
    await store.update_status(ringing, "ringing", START + timedelta(seconds=5))
    for call_id in (queued, ringing):
        assert (await client.post(f"/calls/{call_id}/hangup", headers=AUTH)).status_code == 202
    assert control.hung_up_placing == [True, False]


async def test_hangup_refused_by_twilio_is_502(
    client: httpx.AsyncClient, store: CallStore, control: FakeCallControl
) -> None:
    [call_id] = await seed(store, 1)
    error = TwilioServiceError("Call is not in-progress. Cannot redirect.", code=21220)
    control.hang_up_error = error
    r = await client.post(f"/calls/{call_id}/hangup", headers=AUTH)
    assert r.status_code == 502
    assert r.json() == {
        "detail": "Call is not in-progress. Cannot redirect.",
        "error": "TwilioServiceError",
        "code": 21220,
    }


async def test_a_live_call_is_hung_up_with_the_store_down(
    client: httpx.AsyncClient,
    store: CallStore,
    control: FakeCallControl,
    hub: EventHub,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [call_id] = await seed(store, 1)
    events = hub.subscribe(call_id)

    async def down(*args: object, **kwargs: object) -> None:
        raise StoreError("could not connect to server: Connection refused")

    monkeypatch.setattr(store, "get_call", down)
    monkeypatch.setattr(store, "append_event", down)
    r = await client.post(f"/calls/{call_id}/hangup", headers=AUTH)
    assert r.status_code == 202 and r.json() == {"id": call_id, "hangup": "requested"}
    assert control.hung_up == [call_id]
    assert (await anext(events))["type"] == "call.hangup_requested"

    # No actor serves it: unknown or ended, the store alone could tell.
    control.live = False
    r = await client.post(f"/calls/{call_id}/hangup", headers=AUTH)
    assert r.status_code == 503 and "call store error" in r.json()["detail"]
    # Still behind the token.
    assert (await client.post(f"/calls/{call_id}/hangup")).status_code == 401
    assert control.hung_up == [call_id, call_id]


async def test_a_hang_up_done_is_202_though_noting_it_failed(
    client: httpx.AsyncClient,
    store: CallStore,
    control: FakeCallControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [call_id] = await seed(store, 1)

    async def down(*args: object, **kwargs: object) -> None:
        raise StoreError("could not connect to server: Connection refused")

    monkeypatch.setattr(store, "append_event", down)
    r = await client.post(f"/calls/{call_id}/hangup", headers=AUTH)
    assert r.status_code == 202 and control.hung_up == [call_id]


# -- store failures ------------------------------------------------------------------


async def test_a_failing_store_is_503_naming_it(
    client: httpx.AsyncClient, store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**kwargs: object) -> None:
        raise StoreError("listing calls failed: database is locked")

    monkeypatch.setattr(store, "list_calls", broken)
    r = await client.get("/calls", headers=AUTH)
    assert r.status_code == 503
    assert r.json() == {"detail": "call store error: listing calls failed: database is locked"}


async def test_placement_failure_is_still_502_when_recording_it_fails(
    client: httpx.AsyncClient,
    store: CallStore,
    control: FakeCallControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("updating a call's status failed: disk full")

    monkeypatch.setattr(store, "update_status", broken)
    control.place_error = TwilioServiceError("Twilio said no")
    r = await client.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
    assert r.status_code == 502 and r.json()["error"] == "TwilioServiceError"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/calls", {"to": TO, "instruction": "hi"}),
        ("/create-call", {"userPhone": TO, "instruction": "hi"}),
        ("/calls/web", {"instruction": "hi"}),
    ],
)
async def test_a_placed_call_is_201_though_reading_it_back_fails(
    client: httpx.AsyncClient,
    store: CallStore,
    control: FakeCallControl,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict[str, object],
) -> None:
    # Twilio is ringing by now: a 503 would have a client that retries place a second call.
    async def blip(*args: object, **kwargs: object) -> None:
        raise StoreError("reading a call failed: OperationalError: server closed the connection")

    monkeypatch.setattr(store, "get_call", blip)
    r = await client.post(path, json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    out = r.json()
    [handed] = control.placed + control.web
    call = out["call"] if path == "/calls/web" else out
    assert (call["id"], call["status"]) == (handed.id, "queued")
    assert r.headers["location"] == f"/calls/{handed.id}"
    if path == "/calls/web":  # the browser's one-time ticket is not lost
        assert out["stream_token"] == "web-token"


async def test_a_client_gone_mid_dial_does_not_fail_the_call(
    settings: Settings, store: CallStore, hub: EventHub
) -> None:
    # Twilio may already ring the phone: the placing goes on, its outcome recorded.
    class SlowControl(FakeCallControl):
        def __init__(self) -> None:
            super().__init__()
            self.dialing, self.answered = asyncio.Event(), asyncio.Event()

        async def place(self, call: CallRecord) -> None:
            self.placed.append(call)
            self.dialing.set()
            await self.answered.wait()

    control = SlowControl()
    app = build_app(AppDeps(settings, store, control, hub, (TOKEN,)))
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        request = asyncio.ensure_future(
            c.post("/calls", json={"to": TO, "instruction": "hi"}, headers=AUTH)
        )
        await control.dialing.wait()
        request.cancel()  # the client went away
        with pytest.raises(asyncio.CancelledError):
            await request
    control.answered.set()
    await asyncio.gather(*api._settling)
    detail = await store.get_call(control.placed[0].id)
    assert detail is not None and detail.call.status == "queued"  # not "failed"
    assert [e.kind for e in detail.timeline if e.kind == "problem"] == []


# -- health, docs ------------------------------------------------------------------


async def test_healthz_and_readyz_are_open(
    client: httpx.AsyncClient, control: FakeCallControl
) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json() == {
        "ready": True,
        "checks": {"store": "ok", "control": "ok"},
    }
    control.is_ready = False
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["control"] == "not ready"
    control.ready_error = RuntimeError("no actors")
    r = await client.get("/readyz")
    # The kind only: the probe is open, and messages can name hosts and users.
    assert r.status_code == 503 and r.json()["checks"]["control"] == "RuntimeError"


async def test_ids_that_cannot_be_calls_are_404_not_store_errors(
    client: httpx.AsyncClient,
) -> None:
    # On PostgreSQL a NUL made the query fail (503, "call store error").
    for path in ("/calls/%00", "/calls/a%00b", "/calls/" + "Z" * 26):
        assert (await client.get(path, headers=AUTH)).status_code == 404, path
    r = await client.post("/calls/a%00b/hangup", headers=AUTH)
    assert r.status_code == 404
    bad_cursor = base64.urlsafe_b64encode(b"2025-01-01T00:00:00+00:00|\x00").decode()
    r = await client.get("/calls", params={"cursor": bad_cursor}, headers=AUTH)
    assert r.status_code in (400, 422) and "cursor" in r.text


async def test_a_content_length_of_other_digits_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/calls", content=b"{}", headers=AUTH | {"Content-Length": "\u00b2".encode("latin-1")}
    )
    assert r.status_code == 400 and r.json() == {"detail": "invalid Content-Length"}


async def test_health_and_the_console_answer_head(client: httpx.AsyncClient) -> None:
    for path in ("/", "/healthz", "/readyz"):
        r = await client.head(path)
        assert r.status_code == 200, path
        assert r.content == b""


async def test_readyz_reports_a_closed_store(client: httpx.AsyncClient, store: CallStore) -> None:
    await store.close()
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["store"] != "ok"


async def test_readyz_does_not_wait_forever_for_a_probe(
    client: httpx.AsyncClient, control: FakeCallControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serve.api

    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    monkeypatch.setattr(serve.api, "READY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(control, "ready", hangs)
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["control"] == "no answer within 0.05 s"


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/calls",
        "/calls/{call_id}",
        "/calls/{call_id}/hangup",
        "/create-call",
        "/calls/web",
    } <= set(spec["paths"])
    assert "/twilio/status/{call_id}" in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "from" in spec["components"]["schemas"]["CallCreate"]["properties"]
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_states_what_the_server_does(
    store: CallStore, control: FakeCallControl, hub: EventHub
) -> None:
    settings = make_settings(max_call_duration_s=900.0)
    spec = build_app(AppDeps(settings, store, control, hub, (TOKEN,))).openapi()
    schemas = spec["components"]["schemas"]
    for model in ("CallCreate", "WebCallCreate"):
        duration = schemas[model]["properties"]["max_duration_s"]
        assert [o["maximum"] for o in duration["anyOf"] if "maximum" in o] == [900], model
        assert "MAX_CALL_DURATION_S (900 s here)" in duration["description"]
    paths = spec["paths"]
    for path in ("/calls", "/create-call", "/calls/web"):
        assert {"400", "401", "413", "415", "422", "503"} <= set(paths[path]["post"]["responses"])
    for path, method in (("/calls", "get"), ("/calls/{call_id}", "get")):
        assert {"401", "503"} <= set(paths[path][method]["responses"])
    assert "503" in paths["/calls/{call_id}/hangup"]["post"]["responses"]
    # Every status the store can hold, and no other, is published and answered.
    assert set(schemas["CallOut"]["properties"]["status"]["enum"]) == STATUSES
    assert set(get_args(CallStatus)) == STATUSES


# -- auth -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, None),
        ({"Authorization": "Bearer wrong"}, "invalid_token"),
        ({"Authorization": f"Basic {TOKEN}"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/calls"),
        ("POST", "/calls"),
        ("GET", "/calls/01X"),
        ("POST", "/calls/01X/hangup"),
        ("POST", "/create-call"),
        ("POST", "/calls/web"),
    ],
)
async def test_call_api_needs_a_bearer_token(
    client: httpx.AsyncClient,
    control: FakeCallControl,
    headers: dict[str, str],
    error: str | None,
    method: str,
    path: str,
) -> None:
    r = await client.request(method, path, headers=headers, json={"to": TO, "instruction": "x"})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="switchboard"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert "token" in r.json()["detail"]
    assert control.placed == [] and control.hung_up == [] and control.web == []


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"Content-Type": "application/json"}, b'{"to": '),
        ({"Content-Type": "text/plain"}, b"{}"),
        ({"Content-Type": "application/json"}, b"[1, 2]"),
        ({"Content-Type": "application/json"}, b"[" * 50_000 + b"]" * 50_000),
        ({"Content-Type": "application/json"}, b" " * (MAX_BODY_BYTES + 1)),
        ({"Content-Type": "application/json", "Authorization": "Bearer wrong"}, b'{"to": '),
    ],
)
@pytest.mark.parametrize("path", ["/calls", "/create-call", "/calls/web"])
async def test_without_a_token_the_body_is_not_read(
    client: httpx.AsyncClient, headers: dict[str, str], content: bytes, path: str
) -> None:
    r = await client.post(path, content=content, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith('Bearer realm="switchboard"')
    assert "token" in r.json()["detail"]


async def test_a_chunked_oversized_body_without_a_token_is_401(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)

    r = await client.post("/calls", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json() == {
        "detail": "missing bearer token: send 'Authorization: Bearer <token>'"
    }


async def test_without_a_token_routing_answers_as_before(client: httpx.AsyncClient) -> None:
    # The gate takes only what a protected route would serve.
    assert (await client.delete("/calls")).status_code == 405
    assert (await client.get("/calls/01X/nope")).status_code == 404
    big = {"Content-Length": str(MAX_BODY_BYTES + 1)}
    assert (await client.post("/healthz", headers=big)).status_code == 413


async def test_tokens_from_settings() -> None:
    assert tokens_from_settings(make_settings(switchboard_api_token=None)) == ()
    several = make_settings(switchboard_api_token=" one, two ,,")
    assert tokens_from_settings(several) == ("one", "two")


async def test_every_configured_token_works(client: httpx.AsyncClient) -> None:
    for token in (TOKEN, OTHER_TOKEN):
        r = await client.get("/calls", headers={"Authorization": f"bearer {token}"})
        assert r.status_code == 200


async def test_building_without_a_token_is_a_config_error(
    settings: Settings, control: FakeCallControl, hub: EventHub
) -> None:
    for tokens in ((), ("",), (" padded ",)):
        with pytest.raises(ConfigError):
            build_app(AppDeps(settings, None, control, hub, tokens))  # type: ignore[arg-type]


# -- malformed requests -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "status", "expected"),
    [
        (b'{"to": ', "application/json", 400, "request body is not valid JSON"),
        (b"{'to': 1}", "application/json", 400, "not valid JSON"),
        (b'{"to": "+15551234567", "instruction": "x"}', "text/plain", 415, "'text/plain'"),
        (b'{"to": "+15551234567", "instruction": "x"}', None, 415, "no Content-Type"),
        (b"to=%2B15551234567&instruction=x", "application/x-www-form-urlencoded", 415, "JSON"),
        (b"[1, 2]", "application/json", 422, "request body must be a JSON object"),
        (b"", "application/json", 422, "request body is required"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json", 400, "parsing the body"),
    ],
)
async def test_malformed_bodies_get_clear_errors(
    client: httpx.AsyncClient,
    control: FakeCallControl,
    content: bytes,
    content_type: str | None,
    status: int,
    expected: str,
) -> None:
    headers = AUTH | ({"Content-Type": content_type} if content_type else {})
    r = await client.post("/calls", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert expected in r.text
    assert control.placed == []


async def test_oversized_bodies_are_413(client: httpx.AsyncClient) -> None:
    big = b'{"instruction": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = await client.post(
        "/calls", content=big, headers=AUTH | {"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)

    r = await client.post(
        "/calls", content=chunks(), headers=AUTH | {"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


async def test_unknown_routes_and_methods_are_json(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = await client.delete("/calls", headers=AUTH)
    assert r.status_code == 405 and r.json() == {"detail": "Method Not Allowed"}
