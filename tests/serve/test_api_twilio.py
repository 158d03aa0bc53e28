"""Twilio webhooks over ASGI, signed with twilio-python's own RequestValidator.

A request with a bad or missing signature must change nothing: every refusal
test compares the whole store (calls and their timelines) before and after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
from twilio.request_validator import HMAC_SHA256

from serve.api import build_app
from serve.events import EventHub
from serve.ports import AppDeps
from serve.testing import FakeCallControl, twilio_headers
from serve.twilio_webhooks import amd_callback_url, status_callback_url, voice_url
from sim.twilio.twiml import Connect, Document, Hangup, parse_twiml
from switchboard.errors import CallCanceled, ServiceError, StoreError, TwilioServiceError
from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore, NewCall

# Fixtures and tests share one loop per test.
pytestmark = pytest.mark.asyncio(loop_scope="function")

TWILIO_TOKEN = "twilio-secret"
PUBLIC = "https://calls.example.com"
SID = "CA" + "a" * 32
CALLER = "+15557654321"
OUR_NUMBER = "+15550001111"


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_from_number": OUR_NUMBER,
        "public_url": PUBLIC,
    }
    return Settings.model_validate(values | overrides)


@pytest.fixture
def control() -> FakeCallControl:
    return FakeCallControl()


@pytest.fixture
def hub() -> EventHub:
    return EventHub()


class Harness:
    def __init__(self, store: CallStore, control: FakeCallControl, hub: EventHub) -> None:
        self.store, self.control, self.hub = store, control, hub

    def client(
        self, settings: Settings, base_url: str = "http://internal:8000"
    ) -> httpx.AsyncClient:
        app = build_app(AppDeps(settings, self.store, self.control, self.hub, ("api-token",)))
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url=base_url)

    async def outbound(self) -> str:
        call = await self.store.create_call(
            NewCall(direction="outbound", to=CALLER, from_=OUR_NUMBER, instruction="hi")
        )
        return call.id

    async def snapshot(self) -> list[object]:
        """Every call with its timeline: what a refused webhook must leave untouched."""
        page = await self.store.list_calls(limit=500)
        details = [await self.store.get_call(c.id) for c in page.calls]
        return [(d.call, d.timeline) for d in details if d is not None]


@pytest_asyncio.fixture(loop_scope="function")
async def h(store: CallStore, control: FakeCallControl, hub: EventHub) -> Harness:
    return Harness(store, control, hub)


@pytest_asyncio.fixture(loop_scope="function")
async def client(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with h.client(make_settings()) as c:
        yield c


def status_form(status: str, sequence: int, timestamp: str = "") -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": SID,
        "CallStatus": status,
        "SequenceNumber": str(sequence),
        "Timestamp": timestamp,
        "CallbackSource": "call-progress-events",
        "From": OUR_NUMBER,
        "To": CALLER,
        "ToCity": "SPRINGFIELD",
    }


async def post_signed(
    client: httpx.AsyncClient,
    path: str,
    form: dict[str, str],
    *,
    signed_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    headers = twilio_headers(TWILIO_TOKEN, signed_url or PUBLIC + path, form, extra=extra)
    return await client.post(path, content=urlencode(form), headers=headers)


# -- status callbacks ----------------------------------------------------------------


async def test_status_callbacks_are_recorded_in_order_of_their_meaning(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    events = h.hub.subscribe(call_id)
    path = f"/twilio/status/{call_id}"
    assert status_callback_url(PUBLIC + "/", call_id) == PUBLIC + path
    # Out of order: completed (seq 3) arrives before ringing (seq 1).
    ringing = status_form("ringing", 1, "Wed, 08 Oct 2025 13:54:10 +0000")
    answered = status_form("in-progress", 2, "Wed, 08 Oct 2025 13:54:12 +0000")
    completed = status_form("completed", 3, "Wed, 08 Oct 2025 13:55:00 -0000") | {
        "CallDuration": "48",
        "SipResponseCode": "200",
    }
    for form in (answered, completed, ringing):
        r = await post_signed(client, path, form)
        assert r.status_code == 204, r.text
    detail = await h.store.get_call(call_id)
    assert detail is not None
    call = detail.call
    assert call.status == "completed" and call.twilio_sid == SID
    assert call.answered_at == datetime(2025, 10, 8, 13, 54, 12, tzinfo=UTC)
    assert call.ended_at == datetime(2025, 10, 8, 13, 55, tzinfo=UTC)
    timeline = [(e.data["status"], e.data["applied"], e.data["detail"]) for e in detail.timeline]
    assert [t[:2] for t in timeline] == [
        ("ringing", False),
        ("in-progress", True),
        ("completed", True),
    ]  # stored at Twilio's times, so in true order
    assert timeline[2][2] == {
        "sequence": 3,
        "call_sid": SID,
        "callback_source": "call-progress-events",
        "call_duration_s": "48",
        "sip_response_code": "200",
    }
    assert [(c, s) for c, s, _ in h.control.statuses] == [
        (call_id, "in-progress"),
        (call_id, "completed"),
        (call_id, "ringing"),
    ]
    assert h.control.statuses[0][2]["ToCity"] == "SPRINGFIELD"  # every parameter passed on
    published = [await anext(events) for _ in range(3)]
    assert [(m["type"], m["status"], m["applied"], m["sequence"]) for m in published] == [
        ("call.status", "in-progress", True, 2),
        ("call.status", "completed", True, 3),
        ("call.status", "ringing", False, 1),
    ]
    assert published[0]["at"] == "2025-10-08T13:54:12+00:00"


async def test_a_status_the_store_failed_to_record_still_reaches_the_call(
    client: httpx.AsyncClient, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twilio does not send it again: a call ended before its stream must still end.
    call_id = await h.outbound()

    async def broken(*args: object, **kwargs: object) -> bool:
        raise StoreError("updating a call's status failed: disk full")

    monkeypatch.setattr(h.store, "update_status", broken)
    r = await post_signed(client, f"/twilio/status/{call_id}", status_form("busy", 3))
    assert r.status_code == 503
    assert [(c, s) for c, s, _ in h.control.statuses] == [(call_id, "busy")]
    monkeypatch.setattr(h.store, "get_call", broken)  # the store cannot even be read
    r = await post_signed(client, f"/twilio/status/{call_id}", status_form("no-answer", 4))
    assert r.status_code == 503
    assert [s for _, s, _ in h.control.statuses] == ["busy", "no-answer"]


async def test_a_status_received_within_its_second_is_stamped_when_it_arrived(
    client: httpx.AsyncClient, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Twilio's Timestamp counts whole seconds: the actor's events from earlier in that
    # second must not sort after a status that followed them.
    call_id = await h.outbound()
    arrivals = iter(
        [
            datetime(2025, 10, 8, 13, 54, 12, 700_000, tzinfo=UTC),  # within its second
            datetime(2025, 10, 8, 13, 55, 1, tzinfo=UTC),  # exactly a second late
            datetime(2025, 10, 8, 13, 56, 0, 500_000, tzinfo=UTC),  # stamped in the future
        ]
    )
    monkeypatch.setattr("serve.twilio_webhooks.utc_now", lambda: next(arrivals))
    path = f"/twilio/status/{call_id}"
    forms = (
        status_form("in-progress", 2, "Wed, 08 Oct 2025 13:54:12 +0000"),
        status_form("completed", 3, "Wed, 08 Oct 2025 13:55:00 +0000"),
        status_form("completed", 4, "Wed, 08 Oct 2025 13:56:01 +0000"),
    )
    for form in forms:
        r = await post_signed(client, path, form)
        assert r.status_code == 204, r.text
    detail = await h.store.get_call(call_id)
    assert detail is not None
    assert [e.at for e in detail.timeline] == [
        datetime(2025, 10, 8, 13, 54, 12, 700_000, tzinfo=UTC),
        datetime(2025, 10, 8, 13, 55, tzinfo=UTC),
        datetime(2025, 10, 8, 13, 56, 1, tzinfo=UTC),
    ]
    assert detail.call.answered_at == datetime(2025, 10, 8, 13, 54, 12, 700_000, tzinfo=UTC)


async def test_status_without_timestamp_or_sequence_uses_now(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    form = {"CallSid": SID, "CallStatus": "ringing"}
    before = datetime.now(UTC)
    r = await post_signed(client, f"/twilio/status/{call_id}", form)
    assert r.status_code == 204
    detail = await h.store.get_call(call_id)
    assert detail is not None and detail.timeline[0].at >= before
    assert detail.timeline[0].data["detail"] == {"call_sid": SID}


async def test_status_keeps_the_sid_that_place_already_set(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    await h.store.set_twilio_sid(call_id, "CA" + "b" * 32)
    r = await post_signed(client, f"/twilio/status/{call_id}", status_form("ringing", 0))
    assert r.status_code == 204
    detail = await h.store.get_call(call_id)
    assert detail is not None and detail.call.twilio_sid == "CA" + "b" * 32


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"CallSid": SID}, "missing form field CallStatus"),
        ({"CallStatus": "answered"}, "CallStatus 'answered' is not a call status"),
        (
            {"CallStatus": "ringing", "SequenceNumber": "-1"},
            "SequenceNumber must be a non-negative",
        ),
        ({"CallStatus": "ringing", "SequenceNumber": "1e3"}, "SequenceNumber must be"),
        ({"CallStatus": "ringing", "Timestamp": "yesterday"}, "Timestamp is not an RFC 2822 date"),
        (
            {
                "CallStatus": "ringing",
                "Timestamp": "Wed, 08 Oct 99999999999999999999 13:54:12 +0000",
            },
            "Timestamp is not an RFC 2822 date",
        ),
        (
            {"CallStatus": "ringing", "Timestamp": "Mon, 31 Dec 9999 23:59:59 -1200"},
            "Timestamp is not an RFC 2822 date",
        ),
        ({"CallStatus": "ringing", "CallSid": "C" * 65}, "CallSid is longer than 64"),
    ],
)
async def test_bad_status_fields_are_400_after_the_signature_check(
    client: httpx.AsyncClient, h: Harness, form: dict[str, str], expected: str
) -> None:
    call_id = await h.outbound()
    before = await h.snapshot()
    r = await post_signed(client, f"/twilio/status/{call_id}", form)
    assert r.status_code == 400 and expected in r.json()["detail"]
    assert await h.snapshot() == before and h.control.statuses == []


async def test_unknown_call_id_is_404_only_when_signed(
    client: httpx.AsyncClient, h: Harness
) -> None:
    form = status_form("ringing", 0)
    r = await post_signed(client, "/twilio/status/01UNKNOWN", form)
    assert r.status_code == 404 and "unknown call id" in r.json()["detail"]
    r = await post_signed(client, "/twilio/amd/01UNKNOWN", {"AnsweredBy": "human"})
    assert r.status_code == 404
    unsigned = await client.post(
        "/twilio/status/01UNKNOWN",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 403
    # The AMD callback too: the signature is checked before the call is looked up.
    unsigned = await client.post(
        "/twilio/amd/01UNKNOWN",
        content=urlencode({"AnsweredBy": "human"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 403


# -- signatures -------------------------------------------------------------------------


async def forged_requests(
    h: Harness, call_id: str
) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(path, form, headers) triples that must all be refused."""
    status = status_form("completed", 5)
    voice = {"CallSid": "CA" + "c" * 32, "From": CALLER, "To": OUR_NUMBER}
    amd = {"CallSid": SID, "AnsweredBy": "machine_start"}
    requests = []
    for path, form in (
        (f"/twilio/status/{call_id}", status),
        (f"/twilio/amd/{call_id}", amd),
        ("/twilio/voice", voice),
    ):
        good = twilio_headers(TWILIO_TOKEN, PUBLIC + path, form)
        requests += [
            (path, form, {"Content-Type": good["Content-Type"]}),  # no signature
            (path, form, good | {"X-Twilio-Signature": ""}),
            (path, form, twilio_headers("another-token", PUBLIC + path, form)),
            (path, form | {"Injected": "1"}, good),  # a parameter added after signing
            (path, form, twilio_headers(TWILIO_TOKEN, "https://evil.example.com" + path, form)),
            (path, form, twilio_headers(TWILIO_TOKEN, PUBLIC + path + "x", form)),
        ]
    return requests


async def test_bad_or_missing_signatures_are_403_and_change_nothing(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    events = h.hub.subscribe(None)
    before = await h.snapshot()
    for path, form, headers in await forged_requests(h, call_id):
        r = await client.post(path, content=urlencode(form), headers=headers)
        assert r.status_code == 403, (path, headers, r.text)
        assert "X-Twilio-Signature" in r.json()["detail"]
    assert await h.snapshot() == before
    assert (h.control.statuses, h.control.amd_results, h.control.answered) == ([], [], [])
    assert events.pending == 0


async def test_signature_over_the_proxy_url_when_public_url_is_unset(h: Harness) -> None:
    call_id = await h.outbound()
    path = f"/twilio/status/{call_id}"
    form = status_form("ringing", 0)
    async with h.client(make_settings(public_url=None)) as client:
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "calls.example.com"}
        r = await post_signed(client, path, form, extra=proxied)
        assert r.status_code == 204, r.text
        # Chained proxies: the first value is the one Twilio used.
        chained = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "calls.example.com, lb"}
        assert (await post_signed(client, path, form, extra=chained)).status_code == 204
        # Without forwarding headers the Host header and the request's own scheme count.
        own = "http://internal:8000" + path
        assert (await post_signed(client, path, form, signed_url=own)).status_code == 204
        host_only = {"Host": "edge.example.net:8443"}
        r = await post_signed(
            client, path, form, signed_url="http://edge.example.net:8443" + path, extra=host_only
        )
        assert r.status_code == 204
        # The public port apart, as some balancers send it (a default port is implied).
        apart = proxied | {"X-Forwarded-Port": "8443"}
        r = await post_signed(
            client, path, form, signed_url="https://calls.example.com:8443" + path, extra=apart
        )
        assert r.status_code == 204, r.text
        default = proxied | {"X-Forwarded-Port": "443"}
        assert (await post_signed(client, path, form, extra=default)).status_code == 204
        # A host that names its port already keeps it: the port is not added twice.
        both = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "calls.example.com:8443",
            "X-Forwarded-Port": "8443",
        }
        r = await post_signed(
            client, path, form, signed_url="https://calls.example.com:8443" + path, extra=both
        )
        assert r.status_code == 204, r.text
        # An IPv6 literal's colons are no port: the port apart is added.
        ipv6 = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "[2001:db8::1]"}
        r = await post_signed(
            client,
            path,
            form,
            signed_url="https://[2001:db8::1]:8443" + path,
            extra=ipv6 | {"X-Forwarded-Port": "8443"},
        )
        assert r.status_code == 204, r.text
        # Signed for the public URL but sent without the headers that say so: refused.
        r = await post_signed(client, path, form)
        assert r.status_code == 403 and "http://internal:8000" in r.json()["detail"]
    assert len(h.control.statuses) == 8


@pytest.mark.parametrize(
    "forwarded",
    [
        {"X-Forwarded-Host": "calls.example.com:abc"},
        {"X-Forwarded-Host": "calls.example.com", "X-Forwarded-Port": "99999"},
        {"X-Forwarded-Host": "[::1"},
        {"Host": "calls.example.com:abc"},
        {"Host": "calls.example.com:99999"},
        {"Host": "[::1"},
        {"X-Forwarded-Host": "calls.example.com", "X-Forwarded-Port": "abc"},
    ],
)
async def test_a_forwarded_host_that_makes_no_url_is_403_and_changes_nothing(
    h: Harness, forwarded: dict[str, str]
) -> None:
    # The validator parses the URL and reads its port: ':abc', '99999' and '[::1' raise.
    call_id = await h.outbound()
    events = h.hub.subscribe(None)
    before = await h.snapshot()
    inbound = {"CallSid": SID, "From": CALLER, "To": OUR_NUMBER, "CallStatus": "ringing"}
    requests = [
        ("/twilio/voice", inbound),
        (f"/twilio/status/{call_id}", status_form("ringing", 0)),
        (f"/twilio/amd/{call_id}", {"CallSid": SID, "AnsweredBy": "human"}),
    ]
    async with h.client(make_settings(public_url=None)) as client:
        for path, form in requests:
            r = await post_signed(client, path, form, extra=forwarded)
            assert r.status_code == 403, (path, r.status_code, r.text)
            detail = r.json()["detail"]
            assert "X-Twilio-Signature" in detail and "no valid URL" in detail
    assert await h.snapshot() == before
    assert (h.control.statuses, h.control.amd_results, h.control.answered) == ([], [], [])
    assert events.pending == 0


async def test_public_url_wins_over_forwarding_headers(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    path = f"/twilio/status/{call_id}"
    form = status_form("ringing", 0)
    lying = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.example.com"}
    r = await post_signed(client, path, form, extra=lying)
    assert r.status_code == 204
    r = await post_signed(
        client, path, form, signed_url="http://evil.example.com" + path, extra=lying
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("public_url", "signed_base"),
    [
        ("https://calls.example.com", "https://calls.example.com:443"),
        ("https://calls.example.com:443", "https://calls.example.com"),
        ("http://calls.example.com", "http://calls.example.com:80"),
        ("https://calls.example.com:8443", "https://calls.example.com"),
        ("https://calls.example.com:8443", "https://calls.example.com:8443"),
    ],
)
async def test_port_variants_the_validator_accepts(
    h: Harness, public_url: str, signed_base: str
) -> None:
    call_id = await h.outbound()
    path = f"/twilio/status/{call_id}"
    async with h.client(make_settings(public_url=public_url)) as client:
        r = await post_signed(
            client, path, status_form("ringing", 0), signed_url=signed_base + path
        )
    assert r.status_code == 204, r.text


async def test_query_string_is_part_of_the_signed_url(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    path = f"/twilio/status/{call_id}?attempt=2"
    r = await post_signed(client, path, status_form("ringing", 0))
    assert r.status_code == 204
    bad = twilio_headers(TWILIO_TOKEN, PUBLIC + f"/twilio/status/{call_id}", {})
    r = await client.post(path, content="", headers=bad)
    assert r.status_code == 403


async def test_public_url_with_a_path_prefix(h: Harness) -> None:
    call_id = await h.outbound()
    path = f"/twilio/status/{call_id}"
    async with h.client(make_settings(public_url="https://example.com/switchboard/")) as client:
        r = await post_signed(
            client,
            path,
            status_form("ringing", 0),
            signed_url="https://example.com/switchboard" + path,
        )
    assert r.status_code == 204


SHARED_SECRET = "shared-key-secret"


@pytest.mark.parametrize("token", [TWILIO_TOKEN, None], ids=["with token", "no token"])
async def test_shared_key_signatures_use_the_key_the_settings_header_names(
    h: Harness, caplog: pytest.LogCaptureFixture, token: str | None
) -> None:
    # A Webhook Rule's webhooks are signed with its SharedKey and HMAC-SHA256; the
    # header names the key ("key=test" here), not the auth token.
    call_id = await h.outbound()
    path = f"/twilio/amd/{call_id}"
    form = {"CallSid": SID, "AnsweredBy": "human"}
    settings = make_settings(
        twilio_auth_token=token, twilio_webhook_shared_keys=f"KSold:x, test:{SHARED_SECRET}"
    )

    async with h.client(settings) as shared_client:

        async def post(headers: dict[str, str]) -> httpx.Response:
            return await shared_client.post(path, content=urlencode(form), headers=headers)

        headers = twilio_headers(SHARED_SECRET, PUBLIC + path, form, algorithm=HMAC_SHA256)
        assert (await post(headers)).status_code == 204
        # The same SHA-256 signature claimed as the default SHA-1 fails.
        del headers["X-Twilio-Webhooks-Signature-Settings"]
        assert (await post(headers)).status_code == (403 if token else 503)
        # Signed with the auth token under a SharedKey's name: refused.
        forged = twilio_headers(TWILIO_TOKEN, PUBLIC + path, form, algorithm=HMAC_SHA256)
        r = await post(forged)
        assert r.status_code == 403 and "does not match" in r.json()["detail"]
        # A key this deployment does not have: refused, saying which.
        unknown = forged | {
            "X-Twilio-Webhooks-Signature-Settings": "key=KSnew,algorithm=HMAC_SHA256"
        }
        r = await post(unknown)
        assert r.status_code == 403 and "'KSnew'" in r.json()["detail"]
    assert len(h.control.amd_results) == 1
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "SharedKey 'KSnew' was refused" in logged and "'KSold', 'test'" in logged
    assert SHARED_SECRET not in logged and TWILIO_TOKEN not in logged


async def test_without_a_twilio_token_webhooks_are_503(h: Harness) -> None:
    call_id = await h.outbound()
    async with h.client(make_settings(twilio_auth_token=None)) as client:
        r = await post_signed(client, f"/twilio/status/{call_id}", status_form("ringing", 0))
    assert r.status_code == 503 and "TWILIO_AUTH_TOKEN" in r.json()["detail"]
    assert h.control.statuses == []


@pytest.mark.parametrize(
    ("content", "content_type", "status", "expected"),
    [
        (b"CallStatus=ringing&oops", "application/x-www-form-urlencoded", 400, "malformed form"),
        (b"CallStatus=%FF", "application/x-www-form-urlencoded", 400, "malformed form"),
        ("CallStatus=é".encode(), "application/x-www-form-urlencoded", 400, "malformed form"),
        (b'{"CallStatus": "ringing"}', "application/json", 415, "x-www-form-urlencoded"),
        (b"CallStatus=ringing", None, 415, "x-www-form-urlencoded"),
        (
            "&".join(f"k{i}=v" for i in range(300)).encode(),
            "application/x-www-form-urlencoded",
            400,
            "malformed",
        ),
    ],
)
async def test_malformed_forms(
    client: httpx.AsyncClient,
    h: Harness,
    content: bytes,
    content_type: str | None,
    status: int,
    expected: str,
) -> None:
    call_id = await h.outbound()
    headers = {"X-Twilio-Signature": "whatever"} | (
        {"Content-Type": content_type} if content_type else {}
    )
    before = await h.snapshot()
    r = await client.post(f"/twilio/status/{call_id}", content=content, headers=headers)
    assert r.status_code == status and expected in r.json()["detail"]
    assert await h.snapshot() == before


async def test_repeated_keys_are_signed_like_twilio_does(
    client: httpx.AsyncClient, h: Harness
) -> None:
    call_id = await h.outbound()
    path = f"/twilio/status/{call_id}"
    pairs = [("CallStatus", "ringing"), ("Tag", "b"), ("Tag", "a")]

    class Multi(dict[str, list[str]]):
        def getall(self, key: str) -> list[str]:
            return self[key]

    from twilio.request_validator import RequestValidator

    signature = RequestValidator(TWILIO_TOKEN).compute_signature(
        PUBLIC + path, Multi({"CallStatus": ["ringing"], "Tag": ["b", "a"]})
    )
    headers = {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    r = await client.post(path, content=urlencode(pairs), headers=headers)
    assert r.status_code == 204, r.text


# -- AMD ----------------------------------------------------------------------------------


async def test_amd_result_is_recorded_and_passed_on(client: httpx.AsyncClient, h: Harness) -> None:
    call_id = await h.outbound()
    events = h.hub.subscribe(call_id)
    form = {"CallSid": SID, "AnsweredBy": "machine_end_beep", "MachineDetectionDuration": "4100"}
    path = f"/twilio/amd/{call_id}"
    assert amd_callback_url(PUBLIC, call_id) == PUBLIC + path
    r = await post_signed(client, path, form)
    assert r.status_code == 204, r.text
    detail = await h.store.get_call(call_id)
    assert detail is not None and detail.call.twilio_sid == SID
    assert [(e.kind, e.data) for e in detail.timeline] == [
        ("amd", {"answered_by": "machine_end_beep", "machine_detection_duration_ms": 4100})
    ]
    assert h.control.amd_results == [(call_id, "machine_end_beep", form)]
    event = await anext(events)
    assert (event["type"], event["answered_by"]) == ("call.amd", "machine_end_beep")


async def test_amd_needs_answered_by(client: httpx.AsyncClient, h: Harness) -> None:
    call_id = await h.outbound()
    r = await post_signed(client, f"/twilio/amd/{call_id}", {"CallSid": SID})
    assert r.status_code == 400 and "AnsweredBy" in r.json()["detail"]
    assert h.control.amd_results == []


# -- inbound calls ----------------------------------------------------------------------

BUSY = (Hangup(reject="busy"),)
REFUSED = (Hangup(reject="rejected"),)


def answer_of(r: httpx.Response) -> Document:
    """The voice webhook's TwiML, read as Twilio would (a root other than <Response>
    is its error 12100): the verbs."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/xml")
    return parse_twiml(r.text)


def streams_to(document: Document) -> str:
    [connect] = document
    assert isinstance(connect, Connect) and connect.stream is not None
    return connect.stream.url


def voice_form(sid: str = SID) -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": sid,
        "From": CALLER,
        "To": OUR_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


async def test_inbound_call_is_recorded_and_answered_with_twiml(
    client: httpx.AsyncClient, h: Harness
) -> None:
    events = h.hub.subscribe(None)
    assert voice_url(PUBLIC) == PUBLIC + "/twilio/voice"
    r = await post_signed(client, "/twilio/voice", voice_form())
    assert streams_to(answer_of(r)) == "wss://example.com/media"
    assert r.text == h.control.twiml
    [(call, sid)] = h.control.answered
    assert sid == SID and call.twilio_sid == SID
    assert (call.direction, call.from_, call.to) == ("inbound", CALLER, OUR_NUMBER)
    stored = await h.store.find_by_twilio_sid(SID)
    assert stored is not None and stored.id == call.id and stored.status == "ringing"
    created = await anext(events)
    assert (created["type"], created["call_id"], created["direction"]) == (
        "call.created",
        call.id,
        "inbound",
    )


async def test_a_numbers_status_callback_finds_the_inbound_call_by_its_sid(
    client: httpx.AsyncClient, h: Harness
) -> None:
    r = await post_signed(client, "/twilio/voice", voice_form())
    assert r.status_code == 200
    [(call, _)] = h.control.answered
    form = status_form("completed", 4) | {"CallDuration": "12"}
    r = await post_signed(client, "/twilio/status", form)
    assert r.status_code == 204, r.text
    detail = await h.store.get_call(call.id)
    assert detail is not None and detail.call.status == "completed"
    assert detail.timeline[-1].data["detail"]["call_duration_s"] == "12"
    assert [(c, s) for c, s, _ in h.control.statuses] == [(call.id, "completed")]
    # A CallSid no call has, none at all, or an unsigned request: refused, nothing changed.
    before = await h.snapshot()
    r = await post_signed(client, "/twilio/status", form | {"CallSid": "CA" + "d" * 32})
    assert r.status_code == 404 and "no call has CallSid" in r.json()["detail"]
    r = await post_signed(client, "/twilio/status", {"CallStatus": "completed"})
    assert r.status_code == 400 and "CallSid" in r.json()["detail"]
    r = await post_signed(client, "/twilio/status", form | {"CallSid": "CA" + "e" * 70})
    assert r.status_code == 400
    unsigned = await client.post(
        "/twilio/status",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 403
    assert await h.snapshot() == before
    assert len(h.control.statuses) == 1


async def test_a_retried_inbound_webhook_does_not_create_a_second_call(
    client: httpx.AsyncClient, h: Harness
) -> None:
    # Twilio retries an answer it did not get: while the call rings, the same answer.
    answers = [await post_signed(client, "/twilio/voice", voice_form()) for _ in range(2)]
    assert [streams_to(answer_of(r)) for r in answers] == ["wss://example.com/media"] * 2
    assert answers[0].text == answers[1].text
    page = await h.store.list_calls()
    assert len(page.calls) == 1 and page.calls[0].status == "ringing"
    assert [c.id for c, _ in h.control.answered] == [page.calls[0].id] * 2


async def test_inbound_webhooks_delivered_at_once_create_one_call(
    client: httpx.AsyncClient, h: Harness
) -> None:
    # Both find no call; the second insert fails on the unique CallSid and joins the first.
    answers = await asyncio.gather(
        *(post_signed(client, "/twilio/voice", voice_form()) for _ in range(3))
    )
    assert [r.status_code for r in answers] == [200] * 3
    assert [streams_to(answer_of(r)) for r in answers] == ["wss://example.com/media"] * 3
    page = await h.store.list_calls()
    assert [(c.direction, c.twilio_sid) for c in page.calls] == [("inbound", SID)]
    assert {c.id for c, _ in h.control.answered} == {page.calls[0].id}


async def test_inbound_answer_failure_rejects_and_records_the_call_failed(
    client: httpx.AsyncClient, h: Harness
) -> None:
    h.control.answer_error = TwilioServiceError("no call actor free")
    r = await post_signed(client, "/twilio/voice", voice_form())
    assert answer_of(r) == BUSY
    stored = await h.store.find_by_twilio_sid(SID)
    assert stored is not None and stored.status == "failed"


async def test_inbound_hung_up_while_answering_rejects_and_records_the_call_canceled(
    client: httpx.AsyncClient, h: Harness
) -> None:
    h.control.answer_error = CallCanceled("call x was hung up (api) before it was dialed")
    r = await post_signed(client, "/twilio/voice", voice_form())
    assert answer_of(r) == BUSY
    stored = await h.store.find_by_twilio_sid(SID)
    assert stored is not None and stored.status == "canceled"


@pytest.mark.parametrize("missing", ["CallSid", "From", "To"])
async def test_inbound_needs_sid_from_and_to(
    client: httpx.AsyncClient, h: Harness, missing: str
) -> None:
    form = voice_form()
    del form[missing]
    r = await post_signed(client, "/twilio/voice", form)
    assert r.status_code == 400 and missing in r.json()["detail"]
    assert (await h.store.list_calls()).calls == ()


class StuckControl(FakeCallControl):
    """No actor comes for the call (the pool empty, every slot taken): the answer waits
    on until it is given up. ``hang_up_stuck``: the hang-up waits on as well."""

    def __init__(self, hang_up_stuck: bool = False) -> None:
        super().__init__()
        self.hang_up_stuck = hang_up_stuck
        self.given_up: list[str] = []

    async def answer_inbound(self, call: CallRecord, call_sid: str) -> str:
        self.answered.append((call, call_sid))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.given_up.append(call.id)
            raise
        raise AssertionError("unreachable")

    async def hang_up(self, call_id: str, placing: bool = False) -> bool:
        result = await super().hang_up(call_id, placing)
        if self.hang_up_stuck:
            await asyncio.Event().wait()
        return result


@pytest.mark.parametrize("release", ["answered", "refused", "stuck"], ids=lambda r: f"hang-up {r}")
async def test_an_answer_no_actor_gives_in_time_rejects_busy_and_lets_the_actor_go(
    store: CallStore, hub: EventHub, monkeypatch: pytest.MonkeyPatch, release: str
) -> None:
    # Twilio gives up on the webhook at 15 s: the answer is bounded below that (set tiny
    # here), and what was being taken for the call is let go, by the placing's hang-up.
    monkeypatch.setattr("serve.twilio_webhooks.ANSWER_DEADLINE_S", 0.01)
    monkeypatch.setattr("serve.twilio_webhooks.RELEASE_WAIT_S", 0.01)
    control = StuckControl(hang_up_stuck=release == "stuck")
    if release == "refused":
        control.hang_up_error = ServiceError("the call pool could not take the hang-up")
    h = Harness(store, control, hub)
    async with h.client(make_settings()) as client:
        r = await post_signed(client, "/twilio/voice", voice_form())
    assert answer_of(r) == BUSY
    stored = await h.store.find_by_twilio_sid(SID)
    assert stored is not None and stored.status == "failed"
    assert control.given_up == [stored.id]  # the answer itself stopped
    assert (control.hung_up, control.hung_up_placing) == ([stored.id], [True])
    detail = await h.store.get_call(stored.id)
    assert detail is not None
    [problem] = [e.data for e in detail.timeline if e.kind == "problem"]
    assert problem["source"] == "answering" and "0.01 s" in str(problem["message"])


async def test_a_replay_after_the_stream_joined_leaves_the_live_call_alone(
    client: httpx.AsyncClient, h: Harness
) -> None:
    assert streams_to(answer_of(await post_signed(client, "/twilio/voice", voice_form())))
    call = await h.store.find_by_twilio_sid(SID)
    assert call is not None
    await h.store.update_status(call.id, "in-progress", datetime.now(UTC), {})  # joined
    # What the actor would answer a second prepare with, were it asked.
    h.control.answer_error = ServiceError("LocalProtocolError: call x already has its stream")
    r = await post_signed(client, "/twilio/voice", voice_form())  # the same signed request
    assert answer_of(r) == REFUSED
    stored = await h.store.find_by_twilio_sid(SID)
    assert stored is not None and stored.status == "in-progress"
    assert len(h.control.answered) == 1 and h.control.hung_up == []


@pytest.mark.parametrize("ended", ["completed", "failed", "no-answer"])
async def test_a_replay_after_the_call_ended_takes_no_actor(
    client: httpx.AsyncClient, h: Harness, ended: str
) -> None:
    assert streams_to(answer_of(await post_signed(client, "/twilio/voice", voice_form())))
    call = await h.store.find_by_twilio_sid(SID)
    assert call is not None
    await h.store.update_status(call.id, ended, datetime.now(UTC), {})
    before = await h.snapshot()
    r = await post_signed(client, "/twilio/voice", voice_form())
    assert answer_of(r) == REFUSED
    assert await h.snapshot() == before  # no call, no status, no event
    assert len(h.control.answered) == 1


async def test_a_voice_webhook_naming_a_placed_calls_sid_answers_nothing(
    client: httpx.AsyncClient, h: Harness
) -> None:
    # Twilio asks the voice URL about calls to our number only: ours it dials with TwiML.
    call_id = await h.outbound()
    await h.store.set_twilio_sid(call_id, SID)
    before = await h.snapshot()
    r = await post_signed(client, "/twilio/voice", voice_form())
    assert answer_of(r) == REFUSED
    assert await h.snapshot() == before and h.control.answered == []
