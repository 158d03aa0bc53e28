"""``RayCallControl`` with its Ray side faked: what it asks of Twilio, what it records,
what a failure says. No Ray cluster: actors and the pool are plain objects whose
methods have a ``.remote``, and Ray's wrapped errors are made the way Ray makes them."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import pytest_asyncio
import ray
import requests
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from twilio.base.exceptions import TwilioException, TwilioRestException

from serve.api import build_app
from serve.control import SLOT_WAIT_S, TIME_LIMIT_GRACE_S, RayCallControl
from serve.events import EventHub
from serve.ports import AppDeps
from serve.testing import twilio_headers
from sim.twilio.twiml import Hangup, parse_twiml
from switchboard.errors import (
    CallCanceled,
    RealtimeServiceError,
    ServiceError,
    TwilioServiceError,
)
from switchboard.settings import Settings
from switchboard.store import CallRecord, CallStore, NewCall

pytestmark = pytest.mark.asyncio(loop_scope="function")

SID = "CA" + "7" * 32
AUTH = {"Authorization": "Bearer tok"}


def ray_wrapped(cause: Exception, where: str) -> Exception:
    """``cause`` as awaiting an actor method that raised it gives it back."""
    try:
        raise cause
    except Exception as exc:
        wrapped = RayTaskError(  # type: ignore[no-untyped-call]
            where,
            traceback.format_exc(),
            exc,
            proctitle=f"ray::{where}()",
            pid=4242,
            ip="10.0.3.17",
            actor_repr="CallActor(call-x)",
            actor_id="f00dfeed",
        )
    made: Exception = wrapped.as_instanceof_cause()  # type: ignore[no-untyped-call]
    return made


class Remote:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeActor:
    def __init__(self) -> None:
        self.said: list[str] = []
        self.prepare_error: Exception | None = None
        for name in ("prepare", "twilio_status", "dialed", "hang_up"):
            setattr(self, name, Remote(self._method(name)))

    def _method(self, name: str) -> Any:
        async def method(*args: Any) -> Any:
            self.said.append(name)
            if name == "prepare" and self.prepare_error is not None:
                raise self.prepare_error
            if name == "prepare":  # the token the stream must present: its plan's
                return args[0].stream_token
            return True

        return method


class FakePool:
    """``serving``: calls an actor serves; ``live``: what ``serves`` says of the others."""

    def __init__(self) -> None:
        self.serving: set[str] = set()
        self.others_live: bool | None = False
        self.acquire_error: Exception | None = None
        self.acquiring: set[str] = set()  # calls waiting for an actor started for them
        self.canceled: list[str] = []

        async def acquire(call_id: str) -> tuple[str, tuple[str, int]]:
            if self.acquire_error is not None:
                raise self.acquire_error
            self.serving.add(call_id)
            return "call-x", ("127.0.0.1", 1)

        async def actor_name(call_id: str) -> str | None:
            return "call-x" if call_id in self.serving else None

        async def serves(call_id: str) -> bool | None:
            return True if call_id in self.serving else self.others_live

        async def cancel(call_id: str, placing: bool = False) -> bool:
            if call_id not in self.acquiring and not placing:
                return False
            self.canceled.append(call_id)
            return True

        self.acquire, self.actor_name, self.serves, self.cancel = map(
            Remote, (acquire, actor_name, serves, cancel)
        )


class FakeTwilio:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.updated: list[tuple[str, dict[str, Any]]] = []
        self.create_error: Exception | None = None
        self.update_error: Exception | None = None
        self.status_now = "ringing"  # what a fetch of the call says
        twilio = self

        def update(sid: str, **kw: Any) -> None:
            if twilio.update_error is not None:
                raise twilio.update_error
            twilio.updated.append((sid, kw))
            # As Twilio: a cancel ends only a call not answered; completed ends any.
            if kw["status"] == "completed" or twilio.status_now in ("queued", "ringing"):
                twilio.status_now = kw["status"]

        class Calls:
            def create(self, **kw: Any) -> Any:
                twilio.created.append(kw)
                if twilio.create_error is not None:
                    raise twilio.create_error
                return SimpleNamespace(sid=SID)

            def __call__(self, sid: str) -> Any:
                return SimpleNamespace(
                    update=lambda **kw: update(sid, **kw),
                    fetch=lambda: SimpleNamespace(sid=sid, status=twilio.status_now),
                )

        self.calls = Calls()


class World:
    def __init__(self, store: CallStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.actor, self.pool, self.twilio = FakeActor(), FakePool(), FakeTwilio()
        monkeypatch.setattr(ray, "get_actor", lambda name, namespace=None: self.actor)
        self.settings = Settings.model_validate(
            {
                "public_url": "https://sb.example.com",
                "twilio_auth_token": "t",
                "twilio_from_number": "+15005550006",
                "max_call_duration_s": 900.0,
            }
        )
        self.control = RayCallControl(self.settings, store, self.pool, self.twilio)  # type: ignore[arg-type]
        self.counted: list[tuple[str, str, str]] = []  # problems counted in the metric
        self.control.metrics = SimpleNamespace(  # type: ignore[assignment]
            inc=lambda spec, value, tags: self.counted.append(
                (tags["source"], tags["reason"], tags["fatal"])
            )
        )

    async def call(self, max_duration_s: int | None = None) -> CallRecord:
        new = NewCall(
            direction="outbound",
            to="+15551234567",
            from_="+15005550006",
            instruction="Hi",
            max_duration_s=max_duration_s,
        )
        return await self.store.create_call(new)

    async def problems(self, call_id: str) -> list[dict[str, object]]:
        detail = await self.store.get_call(call_id)
        assert detail is not None
        return [e.data for e in detail.timeline if e.kind == "problem"]


@pytest_asyncio.fixture(loop_scope="function")
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    store = await CallStore.open(f"sqlite:///{tmp_path}/calls.db")
    try:
        yield World(store, monkeypatch)
    finally:
        await store.close()


# -- a dial whose answer never came ----------------------------------------------------


async def test_a_call_twilio_dials_after_create_timed_out_is_ended_there(world: World) -> None:
    world.twilio.create_error = requests.exceptions.ReadTimeout("Read timed out.")
    call = await world.call()
    with pytest.raises(TwilioServiceError, match="could not be reached"):
        await world.control.place(call)
    assert world.actor.said == ["prepare", "twilio_status"]  # told "failed": its slot goes
    world.pool.serving.discard(call.id)

    # Twilio took the call all the same: its callbacks come, to a call no actor serves.
    for status in ("initiated", "ringing", "in-progress"):
        world.twilio.status_now = "ringing" if status == "initiated" else status
        await world.control.on_twilio_status(call.id, status, {"CallSid": SID})
    # Not answered yet: cancel (completed would not do); answered: complete.
    assert world.twilio.updated == [
        (SID, {"status": "canceled"}),
        (SID, {"status": "canceled"}),
        (SID, {"status": "completed"}),
    ]
    problems = await world.problems(call.id)
    assert [p["reason"] for p in problems] == ["orphaned"] * 3
    assert world.counted == [("twilio", "orphaned", "true")] * 3  # the problems metric
    assert problems[-1]["call_sid"] == SID and "in-progress" in str(problems[-1]["message"])
    assert world.actor.said == ["prepare", "twilio_status"]  # no actor was asked


async def test_a_status_of_a_served_or_ended_call_ends_nothing_at_twilio(world: World) -> None:
    call = await world.call()
    await world.control.place(call)
    await world.control.on_twilio_status(call.id, "ringing", {"CallSid": SID})
    assert world.actor.said[-1] == "twilio_status"  # its actor is told

    world.pool.serving.clear()
    for status in ("completed", "canceled", "busy", "no-answer", "failed"):
        await world.control.on_twilio_status(call.id, status, {"CallSid": SID})
    await world.control.on_twilio_status(call.id, "ringing", {})  # no CallSid: nothing to end
    world.pool.others_live = None  # a restarted pool not yet knowing every running actor
    await world.control.on_twilio_status(call.id, "in-progress", {"CallSid": SID})
    assert world.twilio.updated == []
    assert await world.problems(call.id) == []


async def test_ending_an_orphan_that_twilio_refuses_is_logged_not_raised(world: World) -> None:
    call = await world.call()
    world.twilio.update_error = TwilioRestException(400, "/Calls", "Call is not in-progress", 21220)
    await world.control.on_twilio_status(call.id, "in-progress", {"CallSid": SID})
    assert await world.problems(call.id) == []


@pytest.mark.parametrize(
    "refusal",
    [
        TwilioRestException(400, "/Calls", "The 'To' number is not a valid phone number", 21211),
        TwilioException("Credentials are required to create a TwilioClient"),
    ],
    ids=["refused", "sdk-error"],
)
async def test_a_dial_twilio_refuses_tells_the_actor_the_call_failed(
    world: World, refusal: Exception
) -> None:
    told: list[tuple[object, ...]] = []

    async def twilio_status(*args: object) -> bool:
        told.append(args)
        return True

    world.actor.twilio_status = Remote(twilio_status)
    world.twilio.create_error = refusal
    call = await world.call()
    with pytest.raises(TwilioServiceError):
        await world.control.place(call)
    assert told == [(call.id, "failed")]  # never dialed: its actor ends it, its slot goes


async def test_a_dial_whose_actor_is_lost_before_its_stream_is_ended_at_twilio(
    world: World,
) -> None:
    world.actor.dialed = Remote(_raises(ray_wrapped(RuntimeError("lost"), "CallActor.dialed")))
    call = await world.call()
    with pytest.raises(ServiceError, match="lost before its stream"):
        await world.control.place(call)
    assert world.twilio.updated == [(SID, {"status": "completed"})]  # not left ringing
    detail = await world.store.get_call(call.id)
    assert detail is not None and detail.call.twilio_sid is None


async def test_an_orphan_that_ended_before_its_end_at_twilio_is_no_problem(world: World) -> None:
    # Asked, Twilio has the call in progress; it ends before the update (21220), and the
    # fetch after the refusal says completed: nothing was ended here, nothing to note.
    call = await world.call()
    statuses = iter(["in-progress", "completed"])
    updates: list[dict[str, Any]] = []

    def update(**kw: Any) -> None:
        updates.append(kw)
        raise TwilioRestException(400, "/Calls", "Call is not in-progress", 21220)

    world.twilio.calls = lambda sid: SimpleNamespace(  # type: ignore[assignment]
        update=update, fetch=lambda: SimpleNamespace(sid=sid, status=next(statuses))
    )
    await world.control.on_twilio_status(call.id, "in-progress", {"CallSid": SID})
    assert updates == [{"status": "completed"}]
    assert next(statuses, None) is None  # both fetches made
    assert await world.problems(call.id) == []
    assert world.counted == []


# -- Twilio's time limit -----------------------------------------------------------------


@pytest.mark.parametrize(("asked", "actor_limit"), [(120, 120), (None, 900)])
async def test_twilios_time_limit_leaves_the_call_to_its_actor(
    world: World, asked: int | None, actor_limit: int
) -> None:
    await world.control.place(await world.call(asked))
    # The actor counts from the stream's start, Twilio from the answer: Twilio's limit
    # must be later, so the actor ends the call and records max_duration.
    assert world.twilio.created[0]["time_limit"] == actor_limit + TIME_LIMIT_GRACE_S
    assert TIME_LIMIT_GRACE_S >= 30


# -- what a failure says -------------------------------------------------------------------


async def test_an_actors_error_comes_back_as_itself(world: World) -> None:
    message = "cannot open the Realtime session: HTTP 429 Too Many Requests: quota"
    wrapped = ray_wrapped(RealtimeServiceError(message), "CallActor.prepare")
    assert isinstance(wrapped, RealtimeServiceError) and "10.0.3.17" in str(wrapped)
    world.actor.prepare_error = wrapped
    with pytest.raises(RealtimeServiceError) as raised:
        await world.control.place(await world.call())
    assert type(raised.value) is RealtimeServiceError and str(raised.value) == message


async def test_the_client_and_the_record_see_no_ray_internals(world: World) -> None:
    message = "cannot open the Realtime session: HTTP 429 Too Many Requests: quota"
    world.actor.prepare_error = ray_wrapped(RealtimeServiceError(message), "CallActor.prepare")
    app = build_app(AppDeps(world.settings, world.store, world.control, EventHub(), ("tok",)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        answer = await client.post(
            "/calls", json={"to": "+15551234567", "instruction": "Hi"}, headers=AUTH
        )
    assert answer.status_code == 502
    body = answer.json()
    assert body["error"] == "RealtimeServiceError"
    assert body["detail"] == f"the call could not be placed: RealtimeServiceError: {message}"
    problem = (await world.problems(body["call"]["id"]))[0]
    assert problem["reason"] == "RealtimeServiceError" and problem["message"] == message


async def test_no_free_call_slot_says_so(world: World) -> None:
    world.pool.acquire_error = ray_wrapped(TimeoutError(), "RayCallPool.acquire")
    with pytest.raises(ServiceError) as raised:
        await world.control.place(await world.call())
    assert str(raised.value) == (
        f"no call slot became free within {SLOT_WAIT_S:g} s: every one is taken"
    )


async def test_a_ray_failure_is_told_in_one_line(world: World) -> None:
    lost = RuntimeError("The actor died unexpectedly.\n\tpid: 4242\n\tip: 10.0.3.17")
    world.actor.prepare_error = ray_wrapped(lost, "CallActor.prepare")
    with pytest.raises(ServiceError) as raised:
        await world.control.place(await world.call())
    assert str(raised.value) == (
        "no call actor could take the call: RuntimeError: The actor died unexpectedly."
    )


# -- an actor that died after the pool named it ----------------------------------------


@pytest.mark.parametrize("gone", ["dead", "unnamed"])
async def test_an_actor_dead_since_the_pool_named_it_is_no_live_call(
    world: World, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    call = await world.call()
    await world.control.place(call)
    if gone == "dead":  # its process died: every method raises what Ray raises
        for name in ("hang_up", "twilio_status"):
            setattr(world.actor, name, Remote(_raises(ActorDiedError())))
    else:  # its name is gone from the GCS too

        def no_such_actor(name: str, namespace: str | None = None) -> Any:
            raise ValueError(f"Failed to look up actor with name '{name}'")

        monkeypatch.setattr(ray, "get_actor", no_such_actor)
    assert await world.control.hang_up(call.id) is False  # the API's 409, not a 500
    await world.control.on_twilio_status(call.id, "completed", {"CallSid": SID})  # no raise


async def test_a_hang_up_while_the_calls_actor_starts_cancels_the_call_at_the_pool(
    world: World,
) -> None:
    call = await world.call()
    world.pool.acquiring.add(call.id)  # no actor named yet: one is being started for it
    assert await world.control.hang_up(call.id) is True  # the API's 202
    assert world.pool.canceled == [call.id]
    other = await world.call()
    assert await world.control.hang_up(other.id) is False  # neither served nor starting
    # Being placed (its record says so), its acquire not yet at the pool: refused there.
    assert await world.control.hang_up(other.id, placing=True) is True
    assert world.pool.canceled == [call.id, other.id]


async def test_a_hang_up_that_misses_an_actor_handed_out_meanwhile_reaches_it(
    world: World,
) -> None:
    call = await world.call()
    await world.control.place(call)
    served = set(world.pool.serving)
    world.pool.serving.clear()  # the pool named no actor when asked ...

    async def handed_out_meanwhile(call_id: str, placing: bool = False) -> bool:
        world.pool.serving |= served  # ... and had handed one out when told to cancel
        return False

    world.pool.cancel = Remote(handed_out_meanwhile)
    assert await world.control.hang_up(call.id, placing=True) is True
    assert world.actor.said[-1] == "hang_up"


@pytest.mark.parametrize("where", ["RayCallPool.acquire", "CallActor.prepare"])
async def test_a_call_hung_up_while_placed_is_canceled_not_failed(world: World, where: str) -> None:
    # Raised in the pool or the actor, it reaches the API as itself through Ray's wrapping.
    canceled = CallCanceled("call x was hung up (api) before it was dialed")
    if where == "RayCallPool.acquire":
        world.pool.acquire_error = ray_wrapped(canceled, where)
    else:
        world.actor.prepare_error = ray_wrapped(canceled, where)
    with pytest.raises(CallCanceled, match="before it was dialed"):
        await world.control.place(await world.call())
    assert world.twilio.created == []  # never dialed


def _raises(error: Exception) -> Any:
    async def method(*args: Any) -> Any:
        raise error

    return method


async def test_an_actor_unreachable_for_a_moment_is_no_dead_call(world: World) -> None:
    # Its node's link, not its death: the call may well be live, so no "no longer live".
    call = await world.call()
    await world.control.place(call)
    world.actor.hang_up = Remote(_raises(ActorUnavailableError("node link lost", None)))
    with pytest.raises(ServiceError, match="the call's actor did not answer"):
        await world.control.hang_up(call.id)


async def test_a_call_twilio_rings_while_its_actor_winds_up_is_ended_there(
    world: World,
) -> None:
    # The dial's answer timed out: the actor was told, and winds up (its last reports may
    # take minutes with the recorder away) while the pool still lists it. Twilio dialed
    # all the same: the actor says the call is over there, so it is ended as an orphan.
    call = await world.call()
    await world.control.place(call)

    async def over_here(*args: Any) -> bool:
        return False

    world.actor.twilio_status = Remote(over_here)
    await world.control.on_twilio_status(call.id, "ringing", {"CallSid": SID})
    assert world.twilio.updated == [(SID, {"status": "canceled"})]
    await world.control.on_twilio_status(call.id, "completed", {"CallSid": SID})
    assert len(world.twilio.updated) == 1  # over at Twilio too: nothing to end


async def test_a_late_callback_of_a_call_over_at_twilio_ends_nothing(world: World) -> None:
    # Callbacks come out of order: a `ringing` after the call completed, with no actor.
    call = await world.call()
    await world.control.place(call)
    world.pool.serving.discard(call.id)
    world.twilio.status_now = "completed"
    await world.control.on_twilio_status(call.id, "ringing", {"CallSid": SID})
    assert world.twilio.updated == []
    assert await world.problems(call.id) == []


async def test_a_pool_that_cannot_take_a_hang_up_is_a_service_error(world: World) -> None:
    # The GCS cannot say which calls a crashed pool canceled: the API answers 502 with
    # one line, not a 500 with Ray's traceback.
    call = await world.call()

    async def unreadable(call_id: str, placing: bool = False) -> bool:
        raise ray_wrapped(RuntimeError("the GCS is briefly unreachable"), "RayCallPool.cancel")

    world.pool.cancel = Remote(unreadable)
    with pytest.raises(ServiceError, match="could not take the hang-up: RuntimeError: the GCS"):
        await world.control.hang_up(call.id, placing=True)


@pytest.mark.parametrize("stuck", ["acquire", "prepare"])
async def test_an_inbound_answer_given_up_lets_its_actor_go(
    world: World, monkeypatch: pytest.MonkeyPatch, stuck: str
) -> None:
    # No slot frees (or the Realtime session does not open) before Twilio gives up on the
    # webhook: the caller is rejected busy, and the call is hung up as one being placed,
    # so the actor started for it goes to the next call, or closes its session.
    monkeypatch.setattr("serve.twilio_webhooks.ANSWER_DEADLINE_S", 0.01)
    never = asyncio.Event()

    async def acquire(call_id: str) -> tuple[str, tuple[str, int]]:
        world.pool.acquiring.add(call_id)
        await never.wait()
        raise AssertionError("unreachable")

    async def prepare(plan: Any) -> str:
        world.actor.said.append("prepare")
        await never.wait()
        raise AssertionError("unreachable")

    if stuck == "acquire":
        world.pool.acquire = Remote(acquire)
    else:
        world.actor.prepare = Remote(prepare)
    form = {"CallSid": SID, "From": "+15551234567", "To": "+15005550006", "CallStatus": "ringing"}
    headers = twilio_headers("t", "https://sb.example.com/twilio/voice", form)
    app = build_app(AppDeps(world.settings, world.store, world.control, EventHub(), ("tok",)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.post("/twilio/voice", content=urlencode(form), headers=headers)
    assert r.status_code == 200 and parse_twiml(r.text) == (Hangup(reject="busy"),)
    call = await world.store.find_by_twilio_sid(SID)
    assert call is not None and call.status == "failed"
    if stuck == "acquire":
        assert world.pool.canceled == [call.id] and world.actor.said == []
    else:
        assert world.pool.canceled == [] and world.actor.said == ["prepare", "hang_up"]
