"""Live event WebSockets through Starlette's TestClient: auth, fan-out, replay, drops.

The TestClient runs the app on its own event loop in a thread; events are
published on that loop through ``client.portal`` (the hub belongs to one loop).
A first replayed event is the sync point that proves a subscription is live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve import event_stream
from serve.api import build_app
from serve.events import EventHub
from serve.ports import SUBSCRIPTION_DROPPED, AppDeps
from serve.testing import FakeCallControl
from switchboard.errors import StoreError
from switchboard.settings import Settings
from switchboard.store import CallStore, NewCall

TOKEN = "ws-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CallStore]:
    # Synchronous tests (the TestClient blocks), so the store is opened on a
    # throwaway loop; its work runs on its own threads, whatever loop awaits it.
    opened = asyncio.run(CallStore.open(f"sqlite:///{tmp_path}/calls.db"))
    try:
        yield opened
    finally:
        asyncio.run(opened.close())


@pytest.fixture
def call_ids(store: CallStore) -> list[str]:
    async def create() -> list[str]:
        calls = [
            await store.create_call(
                NewCall(direction="outbound", to="+15551234567", from_="+15550001111")
            )
            for _ in range(2)
        ]
        return [c.id for c in calls]

    return asyncio.run(create())


class Live:
    def __init__(self, client: TestClient, hub: EventHub) -> None:
        self.client, self.hub = client, hub

    def publish(self, call_id: str, **event: object) -> None:
        assert self.client.portal is not None
        self.client.portal.call(self.hub.publish, call_id, event)

    def run(self, fn: Callable[[], object]) -> object:
        assert self.client.portal is not None
        return self.client.portal.call(fn)


def live_client(store: CallStore, hub: EventHub) -> Iterator[Live]:
    settings = Settings.model_validate({"twilio_auth_token": "t"})
    app = build_app(AppDeps(settings, store, FakeCallControl(), hub, (TOKEN,)))
    with TestClient(app) as client:
        yield Live(client, hub)


@pytest.fixture
def hub() -> EventHub:
    return EventHub(queue_size=4, replay=2)


@pytest.fixture
def live(store: CallStore, hub: EventHub) -> Iterator[Live]:
    yield from live_client(store, hub)


def test_call_stream_with_header_auth_replays_then_streams_live(
    live: Live, call_ids: list[str]
) -> None:
    a, b = call_ids
    live.publish(a, type="call.created")
    with live.client.websocket_connect(f"/calls/{a}/events", headers=AUTH) as ws:
        assert ws.accepted_subprotocol is None
        first = ws.receive_json()
        assert (first["call_id"], first["type"]) == (a, "call.created") and "at" in first
        live.publish(b, type="other.call")  # not this stream's call
        live.publish(a, type="call.status", status="ringing")
        second = ws.receive_json()
        assert (second["type"], second["status"]) == ("call.status", "ringing")
        assert live.hub.subscriber_count(a) == 1
    # Leaving the block disconnects; the handler's cleanup has run by then.
    assert live.hub.subscriber_count(a) == 0


def test_all_calls_stream_fans_out_every_call(live: Live, call_ids: list[str]) -> None:
    a, b = call_ids
    live.publish(a, type="first")
    with (
        live.client.websocket_connect("/events", headers=AUTH) as everything,
        live.client.websocket_connect(f"/calls/{b}/events", headers=AUTH) as only_b,
    ):
        assert everything.receive_json()["type"] == "first"
        live.publish(b, type="second")
        assert only_b.receive_json()["type"] == "second"  # b's replay: nothing before
        live.publish(a, type="third")
        live.publish(b, type="fourth")
        got = [everything.receive_json() for _ in range(3)]
        assert [(m["call_id"], m["type"]) for m in got] == [
            (b, "second"),
            (a, "third"),
            (b, "fourth"),
        ]
        assert only_b.receive_json()["type"] == "fourth"


def test_browser_subprotocol_auth_is_echoed(live: Live, call_ids: list[str]) -> None:
    live.publish(call_ids[0], type="hello")
    offered = ["switchboard.v1", f"bearer.{TOKEN}"]
    with live.client.websocket_connect("/events", subprotocols=offered) as ws:
        assert ws.accepted_subprotocol == f"bearer.{TOKEN}"
        assert ws.receive_json()["type"] == "hello"


def test_a_proxys_basic_credentials_leave_the_subprotocol_token_to_decide(
    live: Live, call_ids: list[str]
) -> None:
    # Behind a proxy guarded by Basic auth, the browser resends it on the upgrade.
    live.publish(call_ids[0], type="hello")
    basic = {"Authorization": "Basic dXNlcjpwdw=="}
    offered = [f"bearer.{TOKEN}"]
    with live.client.websocket_connect("/events", headers=basic, subprotocols=offered) as ws:
        assert ws.accepted_subprotocol == f"bearer.{TOKEN}"
        assert ws.receive_json()["type"] == "hello"


@pytest.mark.parametrize(
    ("path", "headers", "subprotocols"),
    [
        ("/events", {}, []),
        ("/events", {"Authorization": "Bearer nope"}, []),
        ("/events", {"Authorization": f"Basic {TOKEN}"}, []),
        ("/events", {}, ["bearer.nope"]),
        ("/events", {}, [TOKEN]),
        (f"/events?token={TOKEN}", {}, []),
        (f"/events?access_token={TOKEN}", {}, []),
        ("/calls/{id}/events", {}, []),
        ("/calls/{id}/events", {"Authorization": "Bearer nope"}, [f"bearer.{TOKEN}"]),
    ],
)
def test_unauthenticated_streams_are_closed_before_accept(
    live: Live,
    call_ids: list[str],
    path: str,
    headers: dict[str, str],
    subprotocols: list[str],
) -> None:
    url = path.replace("{id}", call_ids[0])
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        live.client.websocket_connect(url, headers=headers, subprotocols=subprotocols),
    ):
        pass  # pragma: no cover - the handshake fails
    assert refused.value.code == 1008
    assert "bearer token" in refused.value.reason
    assert live.hub.subscriber_count() == 0 and live.hub.subscriber_count(call_ids[0]) == 0


def test_unknown_call_closes_with_4404(live: Live) -> None:
    with (
        live.client.websocket_connect("/calls/01NOPE/events", headers=AUTH) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert closed.value.code == 4404 and "unknown call id 01NOPE" in closed.value.reason


def test_a_failing_store_closes_the_stream_1011_saying_so(
    live: Live, store: CallStore, call_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(call_id: str) -> None:
        raise StoreError("reading a call failed: database is locked")

    monkeypatch.setattr(store, "get_call", broken)
    with (
        live.client.websocket_connect(f"/calls/{call_ids[0]}/events", headers=AUTH) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert closed.value.code == 1011
    assert "call store error: reading a call failed" in closed.value.reason


def test_an_id_that_cannot_be_a_call_is_unknown(live: Live) -> None:
    # A NUL would make PostgreSQL refuse the query: it names no call, like any other.
    with (
        live.client.websocket_connect("/calls/a%00b/events", headers=AUTH) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert closed.value.code == 4404


def test_a_subscriber_that_falls_behind_is_closed_1013_with_the_reason(
    live: Live, call_ids: list[str]
) -> None:
    a = call_ids[0]
    live.publish(a, type="sync")
    with live.client.websocket_connect(f"/calls/{a}/events", headers=AUTH) as ws:
        assert ws.receive_json()["type"] == "sync"

        def burst() -> None:
            # One synchronous burst on the app's loop: the sender cannot drain in between.
            for n in range(10):
                live.hub.publish(a, {"type": "tick", "n": n})

        live.run(burst)
        dropped = ws.receive_json()
        assert dropped["type"] == SUBSCRIPTION_DROPPED and "too slow" in dropped["reason"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1013 and "too slow" in closed.value.reason
    assert live.hub.subscriber_count(a) == 0 and live.hub.dropped_total == 1


def test_feed_shutdown_closes_streams_1001(live: Live, call_ids: list[str]) -> None:
    live.publish(call_ids[0], type="sync")
    with live.client.websocket_connect("/events", headers=AUTH) as ws:
        assert ws.receive_json()["type"] == "sync"
        live.run(live.hub.close)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1001


@pytest.mark.parametrize(
    ("send", "says"),
    [
        (lambda ws: ws.send_text("hello?"), 'expected {"ack": <events received>}'),
        (lambda ws: ws.send_text('{"ack": "1"}'), 'expected {"ack": <events received>}'),
        (lambda ws: ws.send_text('{"ack": 1, "more": 2}'), 'expected {"ack"'),
        (lambda ws: ws.send_bytes(b"\x00"), "binary message"),
        # Nested past the JSON parser's stack: RecursionError, not ValueError.
        (lambda ws: ws.send_text("[" * 100_000 + "]" * 100_000), 'expected {"ack"'),
        (lambda ws: ws.send_text('{"ack": 7}'), "ack 7 is not between 0 and the 1 events sent"),
    ],
)
def test_a_client_message_other_than_an_ack_closes_1007_saying_so(
    live: Live, call_ids: list[str], send: Callable[[object], None], says: str
) -> None:
    a = call_ids[0]
    live.publish(a, type="sync")
    with live.client.websocket_connect(f"/calls/{a}/events", headers=AUTH) as ws:
        assert ws.receive_json()["type"] == "sync"
        send(ws)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1007 and says in closed.value.reason
    assert live.hub.subscriber_count(a) == 0


def test_a_viewer_that_acknowledges_stays_and_one_that_does_not_is_let_go(
    store: CallStore, call_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_stream, "UNACKED_LIMIT", 3)
    a = call_ids[0]
    for live in live_client(store, EventHub(queue_size=64)):
        with live.client.websocket_connect(f"/calls/{a}/events", headers=AUTH) as ws:
            for n in range(10):  # read and acknowledged as they come: never let go
                live.publish(a, type="tick", n=n)
                assert ws.receive_json()["n"] == n
                ws.send_text(f'{{"ack": {n + 1}}}')
            for n in range(10, 14):  # read, not acknowledged: the fourth is one too many
                live.publish(a, type="tick", n=n)
                assert ws.receive_json()["n"] == n
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 1013
        assert closed.value.reason == "4 events not acknowledged: reconnect"
