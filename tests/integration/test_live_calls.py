"""Live calls end to end: API -> Ray call actor -> Twilio and Realtime emulators -> record.

``world`` (conftest.py) is one local Ray cluster with the Serve ingress, the
recorder, the warm pool and the media edge, for the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
import ray
import websockets
from ray.util.state import list_actors

from actors.ray_cancels import KEEP_S, KvCancels
from actors.ray_wiring import (
    NAMESPACE,
    POOL_NAME,
    RaySlotFactory,
    recorder_name,
    shard_of,
    through_restarts,
)
from serve.client import ApiError
from serve.edge_command import PoolResolver
from sim.twilio.calls import CallEvent

World = Any  # the `world` fixture of conftest.py

INSTRUCTION = "You are Ava, booking a dental cleaning for Jane Doe."
CALL_TIMEOUT_S = 90


async def ended(world: World, call_id: str) -> dict[str, Any]:
    """Wait for the recorder's ``call.ended`` event, then read the whole record."""
    async with world.client() as client:

        async def until_ended() -> None:
            async for event in client.stream_events(call_id):
                if event["type"] == "call.ended":
                    return

        await asyncio.wait_for(until_ended(), CALL_TIMEOUT_S)
        detail = await client.get_call(call_id)
    return detail.model_dump()


async def final_status(world: World, call_id: str, status: str) -> dict[str, Any]:
    """Wait until the API shows ``status`` (set by Twilio's signed status callback)."""
    async with world.client() as client:

        async def until() -> dict[str, Any]:
            async for event in client.stream_events(call_id):
                if event["type"] == "call.status" and event.get("status") == status:
                    return (await client.get_call(call_id)).model_dump()
            raise AssertionError("event stream ended")

        return await asyncio.wait_for(until(), CALL_TIMEOUT_S)


async def greeted(client: Any, call_id: str) -> None:
    """Wait until the agent's greeting has been said in full."""

    async def until() -> None:
        async for event in client.stream_events(call_id):
            if event["type"] == "transcript.agent_done":
                return

    await asyncio.wait_for(until(), CALL_TIMEOUT_S)


def said(detail: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["role"], t["heard_text"] or t["text"]) for t in detail["transcript"]]


async def test_a_call_from_greeting_to_goodbye_with_a_barge_in(world: World) -> None:
    async with world.client() as client:
        call = await client.place_call("+15551230001", INSTRUCTION)
    detail = await ended(world, call.id)
    sid = detail["twilio_sid"]
    twilio_call = await world.emulators.wait_for_call_status(sid, "completed", CALL_TIMEOUT_S)

    turns = said(detail)
    assert turns[0] == ("agent", "Hello! This is Ava calling from Bright Smiles Dental.")
    assert turns[1] == ("caller", "Hello? Who is this?")
    cut = [t for t in detail["transcript"] if t["interrupted"]]
    assert len(cut) == 1
    assert cut[0]["text"].startswith("We have openings on Monday")
    assert cut[0]["heard_text"] and cut[0]["heard_text"] != cut[0]["text"]
    assert ("caller", "Wait, sorry, can I ask something first?") in turns
    assert turns[-1] == ("agent", "Perfect, you are booked for Monday at four. Goodbye!")

    # The phone got one `clear`; the truncation matches what it had played.
    stream = twilio_call.streams[-1]
    cutting = [c for c in stream.clears if c.dropped_bytes > 0]
    assert len(cutting) == 1
    session = next(
        s
        for s in await world.emulators.sessions()
        if any(t.accepted for t in s.truncations) and s.truncations[0].item_id == cut[0]["item_id"]
    )
    (truncation,) = session.truncations
    assert truncation.audio_end_ms == cut[0]["heard_ms"]
    # What the phone really played of the cut reply: the unbroken run of heard
    # audio that the clear ended (the caller's turn left a gap before it).
    items = list(twilio_call.heard.items)
    last = next(i for i, item in enumerate(items) if item.ended_by == "cleared")
    first = last
    while first > 0 and items[first].start_ms - items[first - 1].end_ms < 1.0:
        first -= 1
    run = items[first : last + 1]

    def played_by(call_ms: float) -> float:
        return sum(max(0.0, min(item.end_ms, call_ms) - item.start_ms) for item in run)

    # The actor decided the cut after the model said the caller spoke, and before its
    # clear reached the phone: what the phone had played then lies between what it had
    # played at those two moments (both on the emulators' one clock), and the offset is
    # that, within 20 ms (the bound; the marks it rests on come every 100 ms).
    answered = next(t.at for t in twilio_call.transitions if t.event is CallEvent.ANSWERED)
    spoke = max(
        f.t
        for f in session.frames
        if f.type == "input_audio_buffer.speech_started" and f.t <= truncation.t
    )
    heard_when_spoken = played_by((spoke - answered) * 1000)
    heard_at_clear = played_by(items[last].end_ms)
    assert heard_when_spoken - 20 <= truncation.audio_end_ms <= heard_at_clear + 1, (
        truncation,
        heard_when_spoken,
        heard_at_clear,
    )


@pytest.mark.parametrize("status", ["busy", "no-answer", "failed"])
async def test_calls_that_do_not_connect_are_recorded_as_such(world: World, status: str) -> None:
    async with world.client() as client:
        call = await client.place_call(world.outcomes[status], INSTRUCTION)
    detail = await final_status(world, call.id, status)
    assert detail["status"] == status
    assert detail["transcript"] == []


async def test_hangup_through_the_api_ends_the_call_at_twilio(world: World) -> None:
    async with world.client() as client:
        call = await client.place_call("+15551230002", INSTRUCTION)
        await greeted(client, call.id)
        assert (await client.hang_up(call.id)).model_dump()
    detail = await ended(world, call.id)
    sid = detail["twilio_sid"]
    await world.emulators.wait_for_call_status(sid, "completed", CALL_TIMEOUT_S)
    assert any(e["kind"] == "hangup" for e in detail["timeline"])


async def test_a_call_hung_up_while_its_session_opens_is_never_dialed(world: World) -> None:
    """The hang-up reaches the actor while it opens its Realtime session (held open by
    the emulator): the placing stops before the dial, the phone never rings."""
    number = "+15551230077"
    async with world.client() as client:
        placing: asyncio.Future[Any] | None = None
        try:
            async with world.emulators.holding_handshakes():
                placing = asyncio.ensure_future(client.place_call(number, INSTRUCTION))
                await world.emulators.wait_held(1, CALL_TIMEOUT_S)
                (call,) = (await client.list_calls(to=number)).calls
                assert call.status == "queued"
                assert (await client.hang_up(call.id)).hangup == "requested"
        except BaseException:  # no call left ringing into the tests after this one
            if placing is not None:
                placing.cancel()
            for stray in (await client.list_calls(to=number)).calls:
                with contextlib.suppress(ApiError):
                    await client.hang_up(stray.id)
            raise
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(placing, CALL_TIMEOUT_S)
        detail = await client.get_call(call.id)
    assert refused.value.status == 409
    assert detail.status == "canceled"
    assert detail.twilio_sid is None
    calls, _ = await world.emulators.twilio.request("records")
    assert [c for c in calls if c.to == number] == []


async def test_cancels_kept_in_the_gcs_outlive_their_writer_and_age_out(world: World) -> None:
    now = 1_000_000.0
    written = KvCancels("switchboard-test-cancels", clock=lambda: now)
    await written.note("call-a")
    await written.note("call-b")
    read = KvCancels("switchboard-test-cancels", clock=lambda: now)  # as a new pool would
    assert await read.recent() == {"call-a", "call-b"}
    await read.forget("call-a")
    assert await written.recent() == {"call-b"}
    now += KEEP_S + 1
    assert await read.recent() == set()  # too old to be any placing's: deleted
    now -= KEEP_S + 1
    assert await read.recent() == set()


async def test_bad_signatures_and_tokens_are_refused_and_create_nothing(world: World) -> None:
    base = world.stack.public_url
    async with httpx.AsyncClient(base_url=base) as http:
        before = (
            await http.get("/calls", headers={"Authorization": f"Bearer {world.api_token}"})
        ).json()
        form = {"CallSid": "CA" + "9" * 32, "From": "+15557654321", "To": "+15005550006"}
        forged = await http.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": "AAAA"})
        assert forged.status_code == 403
        missing = await http.post("/twilio/voice", data=form)
        assert missing.status_code == 403
        no_token = await http.post("/calls", json={"to": "+15551230003", "instruction": "x"})
        assert no_token.status_code == 401
        after = (
            await http.get("/calls", headers={"Authorization": f"Bearer {world.api_token}"})
        ).json()
    assert len(after["calls"]) == len(before["calls"])
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            base.replace("http", "ws") + "/media/no-such-call",
            additional_headers={"X-Twilio-Signature": "forged"},
        ):
            pass
    assert refused.value.response.status_code in (403, 404)
    with pytest.raises(ApiError) as unauthorised:
        async with world.client("wrong-token") as client:
            await client.list_calls()
    assert unauthorised.value.status == 401


async def test_an_inbound_call_is_answered_through_the_twiml_webhook(world: World) -> None:
    """A caller dials a number whose voice URL is our webhook: Twilio fetches it (signed,
    Direction=inbound, CallStatus=ringing) and streams to the TwiML it gets."""
    number, caller = "+15551230004", "+15005550006"
    public = world.stack.public_url
    client = world.twilio_rest()
    provisioned = await asyncio.to_thread(
        client.incoming_phone_numbers.create,
        phone_number=number,
        voice_url=f"{public}/twilio/voice",
        voice_method="POST",
        status_callback=f"{public}/twilio/status",  # the number's own: found by CallSid
    )
    try:
        sid = await world.emulators.ring_in(number, caller)
        call = await world.emulators.wait_for_call_status(sid, "completed", CALL_TIMEOUT_S)
    finally:  # the emulators outlive this test: free the number
        await asyncio.to_thread(client.incoming_phone_numbers(provisioned.sid).delete)
    assert call.direction == "inbound"
    assert call.streams, "the call never streamed"
    fetch = call.callbacks_of("twiml")[0]
    assert fetch.status_code == 200
    assert (fetch.params["Direction"], fetch.params["CallStatus"]) == ("inbound", "ringing")
    assert (fetch.params["To"], fetch.params["From"]) == (number, caller)
    async with world.client() as api:
        page = await api.list_calls(direction="inbound")
    inbound = [c for c in page.calls if c.twilio_sid == sid]
    assert len(inbound) == 1
    assert (inbound[0].to, inbound[0].from_) == (number, caller)
    detail = await ended(world, inbound[0].id)
    turns = said(detail)
    assert turns[0][0] == "agent"
    assert any(speaker == "caller" for speaker, _ in turns)
    # Twilio's word of the end reaches the call through the number's status callback
    # (the actor's own report of it carries no "applied").
    async with world.client() as api:

        async def told_by_twilio() -> None:
            async for event in api.stream_events(inbound[0].id):
                if event["type"] == "call.status" and "applied" in event:
                    assert event["status"] == "completed", event
                    return

        await asyncio.wait_for(told_by_twilio(), CALL_TIMEOUT_S)
        record = await api.get_call(inbound[0].id)
    assert any(
        e.data.get("detail", {}).get("call_sid") == sid and e.data["status"] == "completed"
        for e in record.timeline
    ), record.timeline


async def test_ten_concurrent_calls_keep_separate_correct_transcripts(world: World) -> None:
    numbers = [f"+1555123{n:04d}" for n in range(100, 110)]
    async with world.client() as client:
        calls = await asyncio.gather(*(client.place_call(n, INSTRUCTION) for n in numbers))
    details = await asyncio.gather(*(ended(world, c.id) for c in calls))
    for call, detail in zip(calls, details, strict=True):
        assert detail["to"] == call.to
        turns = said(detail)
        assert turns[0] == ("agent", "Hello! This is Ava calling from Bright Smiles Dental.")
        assert ("caller", "Hello? Who is this?") in turns
        assert turns[-1] == ("agent", "Perfect, you are booked for Monday at four. Goodbye!")
    sids = {d["twilio_sid"] for d in details}
    assert len(sids) == len(calls)


async def logged_events(recorder: Any, after: int) -> list[dict[str, Any]]:
    """Every event a recorder shard logged after number ``after``."""
    events: list[dict[str, Any]] = []
    while True:
        batch, after = await recorder.poll.remote(after, 0.0)
        if not batch:
            return events
        events += batch


async def test_each_call_is_recorded_by_its_own_recorder_shard(world: World) -> None:
    recorders = world.stack.recorders
    assert len(recorders) == 2  # conftest runs two
    start = await asyncio.gather(*(r.last_seq.remote() for r in recorders))
    calls: list[str] = []
    async with world.client() as client:
        # Busy calls end at once; place them until both shards have had one (a call
        # id's shard is a coin toss: 20 tosses all alike is a one-in-500,000 chance).
        while len({shard_of(c, 2) for c in calls}) < 2:
            assert len(calls) < 20, "every call id mapped to one shard"
            call = await client.place_call(world.outcomes["busy"], INSTRUCTION)
            await ended(world, call.id)
            calls.append(call.id)
    logs = await asyncio.gather(
        *(logged_events(r, s) for r, s in zip(recorders, start, strict=True))
    )
    for call_id in calls:
        home = shard_of(call_id, 2)
        for index, events in enumerate(logs):
            kinds = {e["type"] for e in events if e["call_id"] == call_id}
            if index == home:  # the ingress's events and the call actor's, together
                assert {"call.created", "call.status", "call.ended"} <= kinds
            else:
                assert kinds == set()


async def restarts(name: str) -> int | None:
    """How often Ray has restarted the named actor (its state API, in a thread); None
    while it is not alive."""
    alive = await asyncio.to_thread(
        list_actors, filters=[("name", "=", name), ("state", "=", "ALIVE")], detail=True
    )
    return int(alive[0].num_restarts) if alive else None


async def test_a_recorder_killed_mid_call_comes_back_and_the_record_is_whole(
    world: World,
) -> None:
    turn_ends = {"transcript.caller", "transcript.agent_done", "transcript.agent_interrupted"}
    async with world.client() as client:
        call = await client.place_call("+15551230400", INSTRUCTION)
        shard = shard_of(call.id, len(world.stack.recorders))
        before = await restarts(recorder_name(shard))
        assert before is not None
        seen: list[dict[str, Any]] = []

        async def watch() -> None:  # one viewer from before the crash to the end
            async for event in client.stream_events(call.id):
                seen.append(event)
                if event["type"] == "transcript.agent_done" and restarts_left:
                    restarts_left.pop()
                    ray.kill(world.stack.recorders[shard], no_restart=False)  # a crash
                if event["type"] == "call.ended":
                    return

        restarts_left = [1]  # crash once, after the greeting was recorded
        await asyncio.wait_for(watch(), CALL_TIMEOUT_S)
        detail = (await client.get_call(call.id)).model_dump()
    assert await restarts(recorder_name(shard)) == before + 1
    turns = said(detail)
    assert turns[0] == ("agent", "Hello! This is Ava calling from Bright Smiles Dental.")
    assert ("caller", "Yes, four o'clock works for me.") in turns
    assert turns[-1] == ("agent", "Perfect, you are booked for Monday at four. Goodbye!")
    # The viewer missed nothing: every turn's end reached it, those after the crash too.
    ended_live = {e["item_id"] for e in seen if e["type"] in turn_ends}
    assert ended_live == {t["item_id"] for t in detail["transcript"]}


async def test_a_pool_killed_mid_call_comes_back_and_takes_over_the_live_call(
    world: World,
) -> None:
    pool = world.stack.pool
    async with world.client() as client:
        call = await client.place_call("+15551230500", INSTRUCTION)
        await greeted(client, call.id)
        actor = await pool.actor_name.remote(call.id)
        ready = set(await pool.ready_names.remote())
        before = await restarts(POOL_NAME)
        assert before is not None
        ray.kill(pool, no_restart=False)  # a crash: Ray restarts it
        while await restarts(POOL_NAME) != before + 1:  # the state API: the new pool is up
            await asyncio.sleep(0.05)  # polling Ray's state, bounded by the test's timeout
        # The new pool found the call's actor, and the ready ones, before answering.
        assert await through_restarts(lambda: pool.actor_name.remote(call.id)) == actor
        assert ready <= set(await pool.ready_names.remote())
    detail = await ended(world, call.id)
    assert said(detail)[-1] == ("agent", "Perfect, you are booked for Monday at four. Goodbye!")

    async def recycled() -> None:  # the new pool watched the call end and took it back
        while actor not in await pool.ready_names.remote():
            await asyncio.sleep(0.05)  # polling the pool, bounded below

    await asyncio.wait_for(recycled(), CALL_TIMEOUT_S)
    async with world.client() as client:  # and it places calls as before
        later = await client.place_call(world.outcomes["busy"], INSTRUCTION)
    assert (await ended(world, later.id))["to"] == world.outcomes["busy"]


async def test_a_call_whose_actor_dies_is_recorded_as_ended_by_that(world: World) -> None:
    pool = world.stack.pool
    async with world.client() as client:
        call = await client.place_call("+15551230600", INSTRUCTION)
        seen: list[dict[str, Any]] = []

        async def watch() -> None:  # one viewer from before the death to the end
            killed = False
            async for event in client.stream_events(call.id):
                seen.append(event)
                if event["type"] == "transcript.agent_done" and not killed:
                    name = await pool.actor_name.remote(call.id)
                    actor = await asyncio.to_thread(ray.get_actor, name, namespace=NAMESPACE)
                    ray.kill(actor, no_restart=True)  # the process dies mid-call
                    killed = True
                # Its media socket went with it: Twilio ends the call and says so.
                kinds = {(e["type"], e.get("status")) for e in seen}
                if {("call.ended", None), ("call.status", "completed")} <= kinds:
                    return

        await asyncio.wait_for(watch(), CALL_TIMEOUT_S)
        detail = (await client.get_call(call.id)).model_dump()
    (end,) = [e for e in seen if e["type"] == "call.ended"]
    assert end["reason"] == "actor_failed"
    problems = [e["data"] for e in detail["timeline"] if e["kind"] == "problem"]
    assert [(p["source"], p["reason"], p["fatal"]) for p in problems] == [
        ("switchboard", "actor_failed", True)
    ]
    finished = [e["data"]["reason"] for e in detail["timeline"] if e["kind"] == "finished"]
    assert finished == ["actor_failed"]
    assert detail["status"] == "completed"


async def node_address(actor_name: str) -> str:
    """The address of the Ray node the named actor runs on (Ray's state API, in a thread)."""
    (actor,) = await asyncio.to_thread(
        list_actors, filters=[("name", "=", actor_name), ("state", "=", "ALIVE")], detail=True
    )
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    return next(str(n["NodeManagerAddress"]) for n in nodes if n["NodeID"] == actor.node_id)


async def test_call_actors_spread_over_the_nodes_and_listen_on_their_own(world: World) -> None:
    # The world's cluster has two nodes (127.0.0.1 and 127.0.0.2). Call actors started as
    # the pool starts them are spread over both (Ray's default packs them onto one node
    # while it is below half its call slots: all six, measured), and each listens on its
    # own node's address, not the pool's or the ingress's.
    factory = RaySlotFactory()
    slots = await asyncio.gather(*(factory.create() for _ in range(6)))
    try:
        where = {s.name: (await node_address(s.name), s.media_address[0]) for s in slots}
    finally:
        await asyncio.gather(*(factory.retire(s) for s in slots))
    assert {node for node, _ in where.values()} == set(world.nodes), where
    assert all(node == listening for node, listening in where.values()), where
    # So do the pool's own, wherever Ray put them.
    for name in await world.stack.pool.ready_names.remote():
        described = await ray.get_actor(name, namespace=NAMESPACE).describe.remote()
        assert described[1][0] == await node_address(name)


async def test_a_node_can_name_the_address_its_call_actors_listen_on(world: World) -> None:
    # A node whose outside address is not Ray's (a pod behind its own IP) sets
    # SWITCHBOARD_MEDIA_HOST for its workers; here it arrives in the actor's environment.
    other = {"env_vars": {"SWITCHBOARD_MEDIA_HOST": "127.0.0.3"}}
    factory = RaySlotFactory({"runtime_env": other})
    slot = await factory.create()
    try:
        assert slot.media_address[0] == "127.0.0.3"
        _, writer = await asyncio.open_connection(*slot.media_address)  # and listens there
        writer.close()
    finally:
        await factory.retire(slot)


async def test_an_edge_started_before_the_pool_finds_it_by_name_once_it_exists(
    world: World,
) -> None:
    # `switchboard edge` listens at once (its readiness gates the head pod's on Kubernetes,
    # and so Serve's deployment, which makes the pool): until the pool exists, no call
    # is live; once it does, it is found.
    missing = PoolResolver(name="switchboard-pool-not-made-yet")
    assert await missing.resolve("01ABC") is None
    assert missing.pool is None  # asked again at the next stream
    resolver = PoolResolver()
    async with world.client() as client:
        call = await client.place_call("+15551230301", INSTRUCTION)
        assert await resolver.resolve(call.id) is not None
        assert await resolver.resolve("01NOSUCHCALL") is None
        await client.hang_up(call.id)
    await ended(world, call.id)


async def test_a_finished_calls_actor_serves_a_later_call(world: World) -> None:
    pool = world.stack.pool
    async with world.client() as client:
        first = await client.place_call("+15551230300", INSTRUCTION)
        first_actor = await pool.actor_name.remote(first.id)
        assert first_actor is not None
        await ended(world, first.id)

        async def recycled() -> None:  # the pool takes it back just after the call ends
            while first_actor not in await pool.ready_names.remote():
                await asyncio.sleep(0.05)  # polling the pool, bounded below

        await asyncio.wait_for(recycled(), CALL_TIMEOUT_S)
        # Enough calls at once to take every ready actor, the recycled one included.
        count = len(await pool.ready_names.remote())
        numbers = [f"+1555123{n:04d}" for n in range(301, 301 + count)]
        calls = await asyncio.gather(*(client.place_call(n, INSTRUCTION) for n in numbers))
        actors = [await pool.actor_name.remote(c.id) for c in calls]
    assert first_actor in actors
    for detail in await asyncio.gather(*(ended(world, c.id) for c in calls)):
        turns = said(detail)
        assert turns[0] == ("agent", "Hello! This is Ava calling from Bright Smiles Dental.")
        assert turns[-1] == ("agent", "Perfect, you are booked for Monday at four. Goodbye!")
