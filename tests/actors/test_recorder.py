from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from actors.recorder import ACTOR_FAILED, FORGET_AFTER_S, CallRecorder, EventLog
from switchboard.call_actions import (
    AgentTranscriptGrew,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    CallStatusChanged,
    FinishCall,
    ForwardCallerAudio,
    LatencyMeasured,
    PhaseChanged,
)
from switchboard.errors import StoreError
from switchboard.store import NewCall


async def test_event_log_numbers_events_and_long_polls() -> None:
    log = EventLog(capacity=3)
    assert await log.after(0, timeout_s=0.01) == ([], 0)
    waiter = asyncio.ensure_future(log.after(0, timeout_s=5))
    await log.append({"n": 1})
    assert await waiter == ([{"n": 1}], 1)
    for n in (2, 3, 4, 5):
        await log.append({"n": n})
    events, cursor = await log.after(1, timeout_s=0)
    assert events == [{"n": 3}, {"n": 4}, {"n": 5}]  # 2 fell out of the log
    assert cursor == 5
    assert (await log.after(3, timeout_s=0, limit=1)) == ([{"n": 4}], 4)
    waiter = asyncio.ensure_future(log.after(5, timeout_s=5))
    await log.extend([{"n": 6}, {"n": 7}])  # one wake-up for a whole report
    assert await waiter == ([{"n": 6}, {"n": 7}], 7)
    assert await log.after(7, timeout_s=0) == ([], 7)


async def test_a_new_log_numbers_on_from_where_it_is_told() -> None:
    log = EventLog(first=1000)
    assert log.last == 1000
    await log.extend([{"n": 1}, {"n": 2}])
    assert await log.after(0, timeout_s=0) == ([{"n": 1}, {"n": 2}], 1002)
    assert await log.after(1001, timeout_s=0) == ([{"n": 2}], 1002)


async def test_a_restarted_recorder_numbers_above_the_one_before(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    before = CallRecorder(url)
    await before.publish({"call_id": "c", "type": "call.status"})
    _, cursor = await before.poll(0, timeout_s=0)
    after = CallRecorder(url)  # what Ray makes when it restarts a dead recorder
    await after.publish({"call_id": "c", "type": "call.ended"})
    events, _ = await after.poll(cursor, timeout_s=0)  # a replica polling on
    assert [e["type"] for e in events] == ["call.ended"]


async def test_reports_are_stored_and_published(tmp_path: Path) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    await recorder.open()
    assert recorder.store is not None
    call = await recorder.store.create_call(
        NewCall(direction="outbound", to="+15551234567", from_="+15005550006")
    )
    now = time.time()
    await recorder.report(
        call.id,
        [
            (CallerTurnTranscribed("item_1", "Hello?"), now),
            (ForwardCallerAudio("AAAA"), now),
            (FinishCall("stream_stopped"), now + 1),
        ],
    )
    events, cursor = await recorder.poll(0, timeout_s=0)
    assert [e["type"] for e in events] == ["transcript.caller", "call.ended"]
    assert cursor == recorder.events.last
    detail = await recorder.store.get_call(call.id)
    assert detail is not None
    assert [turn.text for turn in detail.transcript] == ["Hello?"]
    assert any(e.kind == "finished" for e in detail.timeline)
    await recorder.close()


async def test_batches_sent_together_are_recorded_in_the_order_they_were_sent(
    tmp_path: Path,
) -> None:
    # Ray interleaves an async actor's calls: the end of a call's last batch must
    # not overtake the deltas of the one before it.
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    await recorder.open()
    assert recorder.store is not None
    call = await recorder.store.create_call(
        NewCall(direction="outbound", to="+15551234567", from_="+15005550006")
    )
    now = time.time()
    words = ["Hello!", " This", " is", " Ava", " calling", " from", " Bright", " Smiles."]
    first = [(AgentTurnStarted("item_1"), now)]
    first += [(AgentTranscriptGrew("item_1", w), now) for w in words[:6]]
    last = [(AgentTranscriptGrew("item_1", w), now + 1) for w in words[6:]]
    last += [(FinishCall("stream_stopped"), now + 2)]
    await asyncio.gather(recorder.report(call.id, first), recorder.report(call.id, last))
    detail = await recorder.store.get_call(call.id)
    assert detail is not None
    assert [turn.text for turn in detail.transcript] == ["".join(words)]
    events, _ = await recorder.poll(0, timeout_s=0)
    assert [e["type"] for e in events][-1] == "call.ended"
    await recorder.close()


async def new_call(recorder: CallRecorder) -> str:
    await recorder.open()
    assert recorder.store is not None
    call = await recorder.store.create_call(
        NewCall(direction="outbound", to="+15551234567", from_="+15005550006")
    )
    return call.id


async def timeline(recorder: CallRecorder, call_id: str) -> list[str]:
    assert recorder.store is not None
    detail = await recorder.store.get_call(call_id)
    assert detail is not None
    return [f"{e.kind}:{e.data.get('new', e.data.get('ms'))}" for e in detail.timeline]


async def live_types(recorder: CallRecorder) -> list[str]:
    events, _ = await recorder.poll(0, timeout_s=0)
    return [str(e["type"]) for e in events]


async def test_a_batch_sent_again_is_recorded_once(tmp_path: Path) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    now = time.time()
    first = [(PhaseChanged("idle", "listening"), now), (LatencyMeasured("answer", 310.0), now)]
    await recorder.report(call_id, first, seq=0, sender="actor-1")
    # Its answer was lost: the call actor sends it again, with what came since.
    later = [(PhaseChanged("listening", "speaking"), now + 1)]
    await recorder.report(call_id, first + later, seq=0, sender="actor-1")
    await recorder.report(call_id, later, seq=2, sender="actor-1")  # and again, alone
    assert await timeline(recorder, call_id) == [
        "phase:listening",
        "latency:310.0",
        "phase:speaking",
    ]
    assert await live_types(recorder) == ["call.phase", "latency", "call.phase"]
    await recorder.close()


async def test_a_restarted_recorder_skips_what_the_one_before_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    before = CallRecorder(url)
    call_id = await new_call(before)
    now = time.time()
    marked = [(AgentTurnStarted("item_1"), now), (PhaseChanged("listening", "speaking"), now)]
    unmarked = [(AgentTranscriptGrew("item_1", "Hello", 0), now)]  # no timeline event
    await before.report(call_id, marked, seq=0, sender="actor-1")
    await before.report(call_id, unmarked, seq=2, sender="actor-1")
    await before.close()
    # The recorder died before its answer to the second batch: Ray made a new one, and
    # the call actor sends that batch again, with more.
    after = CallRecorder(url)
    more = [
        (AgentTranscriptGrew("item_1", " there.", 5), now + 1),
        (FinishCall("stream_stopped"), now + 2),
    ]
    await after.report(call_id, marked + unmarked + more, seq=0, sender="actor-1")
    assert await timeline(after, call_id) == ["phase:speaking", "finished:None"]
    assert after.store is not None
    detail = await after.store.get_call(call_id)
    assert detail is not None
    assert [turn.text for turn in detail.transcript] == ["Hello there."]
    # What the new log publishes: not the phase change the first recorder published.
    assert await live_types(after) == ["transcript.agent_delta"] * 2 + ["call.ended"]
    await after.close()


async def test_unnumbered_reports_are_all_recorded(tmp_path: Path) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    now = time.time()
    batch = [(LatencyMeasured("response", 500.0), now)]
    await recorder.report(call_id, batch)
    await recorder.report(call_id, batch)
    assert await timeline(recorder, call_id) == ["latency:500.0", "latency:500.0"]
    await recorder.close()


async def test_each_sender_is_numbered_apart(tmp_path: Path) -> None:
    # A second call actor serving the same call (an inbound webhook retried after the
    # first one died) numbers its actions from 0 too: none of them is skipped.
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    now = time.time()
    first = [(PhaseChanged("idle", "listening"), now), (LatencyMeasured("answer", 1.0), now)]
    second = [(PhaseChanged("idle", "speaking"), now + 1), (LatencyMeasured("answer", 2.0), now)]
    await recorder.report(call_id, first, seq=0, sender="actor-1")
    await recorder.report(call_id, second, seq=0, sender="actor-2")
    assert await timeline(recorder, call_id) == [
        "phase:listening",
        "latency:1.0",
        "latency:2.0",
        "phase:speaking",
    ]
    await recorder.close()


async def test_a_stale_batch_arriving_late_does_not_undo_what_is_recorded(
    tmp_path: Path,
) -> None:
    # Ray interleaves an actor's calls: a first send of actions 0-1 may arrive after
    # actions 0-2 are recorded. What it says (2 recorded) must not make a later resend
    # of action 2 look new.
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    now = time.time()
    first = [(PhaseChanged("idle", "listening"), now), (LatencyMeasured("answer", 310.0), now)]
    later = [(PhaseChanged("listening", "speaking"), now + 1)]
    await recorder.report(call_id, first + later, seq=0, sender="actor-1")
    await recorder.report(call_id, first, seq=0, sender="actor-1")  # the stale one
    await recorder.report(call_id, later, seq=2, sender="actor-1")  # sent again
    assert await timeline(recorder, call_id) == [
        "phase:listening",
        "latency:310.0",
        "phase:speaking",
    ]
    await recorder.close()


async def test_a_write_that_failed_after_it_committed_is_not_recorded_twice(
    tmp_path: Path,
) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    assert recorder.store is not None
    now = time.time()
    await recorder.report(call_id, [(PhaseChanged("idle", "listening"), now)], 0, "actor-1")
    append = recorder.store.append_events

    async def committed_then_lost(*args: Any, **kwargs: Any) -> None:
        await append(*args, **kwargs)
        raise StoreError("the database's answer to COMMIT was lost")

    recorder.store.append_events = committed_then_lost  # type: ignore[method-assign]
    batch = [(PhaseChanged("listening", "speaking"), now + 1)]
    with pytest.raises(StoreError):
        await recorder.report(call_id, batch, 1, "actor-1")
    recorder.store.append_events = append  # type: ignore[method-assign]
    await recorder.report(call_id, batch, 1, "actor-1")  # the call actor sends it again
    assert await timeline(recorder, call_id) == ["phase:listening", "phase:speaking"]
    await recorder.close()


async def test_nothing_of_an_ended_call_is_kept(tmp_path: Path) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    now = time.time()
    await recorder.report(call_id, [(FinishCall("stream_stopped"), now)], 0, "actor-1")
    # A web call's status comes after its end, in a batch of its own.
    await recorder.report(call_id, [(CallStatusChanged("completed"), now)], 1, "actor-1")
    assert (recorder._calls, recorder._recorded, recorder._heard) == ({}, {}, {})
    await recorder.close()


async def test_what_is_kept_for_a_call_that_never_ends_is_forgotten_when_it_goes_quiet(
    tmp_path: Path,
) -> None:
    # A call whose actor died sends no end; after an end, a late batch (usage, a failed
    # hang-up) starts its state again. Neither may stay for the recorder's lifetime.
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    quiet, talking = await new_call(recorder), await new_call(recorder)
    await recorder.report(quiet, [(PhaseChanged("idle", "listening"), time.time())], 0, "a-1")
    heard = recorder._heard[quiet]
    await recorder.report(talking, [(PhaseChanged("idle", "listening"), time.time())], 0, "a-2")
    recorder._heard[talking] = heard + FORGET_AFTER_S / 2  # heard from since
    recorder.forget_quiet(heard + FORGET_AFTER_S - 1)
    assert set(recorder._calls) == {quiet, talking}
    recorder.forget_quiet(heard + FORGET_AFTER_S)
    assert (set(recorder._calls), set(recorder._recorded)) == ({talking}, {(talking, "a-2")})
    # Forgotten, a call's numbered batch is still recorded once: the store keeps count.
    await recorder.report(quiet, [(PhaseChanged("idle", "listening"), time.time())], 0, "a-1")
    await recorder.report(quiet, [(PhaseChanged("listening", "speaking"), time.time())], 1, "a-1")
    assert await timeline(recorder, quiet) == ["phase:listening", "phase:speaking"]
    await recorder.close()


async def ends_and_problems(recorder: CallRecorder, call_id: str) -> list[tuple[object, ...]]:
    assert recorder.store is not None
    detail = await recorder.store.get_call(call_id)
    assert detail is not None
    return [
        (e.kind, e.data["reason"], e.data.get("fatal"))
        for e in detail.timeline
        if e.kind in ("finished", "problem")
    ]


async def test_an_actor_that_died_in_its_call_ends_the_call(tmp_path: Path) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    await recorder.report(call_id, [(PhaseChanged("idle", "listening"), time.time())], 0, "a-1")
    await recorder.actor_died(call_id, "ActorDiedError", time.time())
    assert await ends_and_problems(recorder, call_id) == [
        ("problem", ACTOR_FAILED, True),
        ("finished", ACTOR_FAILED, None),
    ]
    assert (await live_types(recorder))[-2:] == ["problem", "call.ended"]
    await recorder.close()


async def test_an_actor_that_died_mid_reply_leaves_it_cut_with_nothing_known_heard(
    tmp_path: Path,
) -> None:
    # The reply it was speaking gets no cut from it: not "speaking" on a finished call, not
    # all heard, and not held in the recorder's transcript buffer, which outlives calls.
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    started = [(AgentTurnStarted("a1"), time.time())]
    grew = [(AgentTranscriptGrew("a1", "Your order ships tomorrow and", 0), time.time())]
    await recorder.report(call_id, started + grew, 0, "a-1")
    await recorder.actor_died(call_id, "ActorDiedError", time.time())
    assert recorder.store is not None
    detail = await recorder.store.get_call(call_id)
    assert detail is not None
    assert [(t.state, t.heard_text) for t in detail.transcript] == [("interrupted", "")]
    assert recorder.store._turns.live_text(call_id) == {}
    await recorder.close()


async def test_an_actor_that_died_after_its_call_ended_adds_no_second_end(tmp_path: Path) -> None:
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    await recorder.report(call_id, [(FinishCall("stream_stopped"), time.time())], 0, "a-1")
    await recorder.actor_died(call_id, "ActorDiedError", time.time())
    assert await ends_and_problems(recorder, call_id) == [
        ("finished", "stream_stopped", None),
        ("problem", ACTOR_FAILED, False),
    ]
    assert await live_types(recorder) == ["call.ended", "problem"]
    await recorder.close()


async def test_an_end_reported_after_the_calls_end_is_not_recorded(tmp_path: Path) -> None:
    # The pool's word of a death, then the dead actor's last report, delivered late.
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    await recorder.actor_died(call_id, "ActorDiedError", time.time())
    late = [(LatencyMeasured("answer", 300.0), time.time()), (FinishCall("hangup"), time.time())]
    await recorder.report(call_id, late, 0, "a-1")
    assert await ends_and_problems(recorder, call_id) == [
        ("problem", ACTOR_FAILED, True),
        ("finished", ACTOR_FAILED, None),
    ]
    assert await timeline(recorder, call_id) == [
        "problem:None",
        "finished:None",
        "latency:300.0",
    ]
    assert (await live_types(recorder))[-2:] == ["call.ended", "latency"]
    await recorder.close()


async def test_a_peers_bad_id_is_noted_and_the_rest_of_the_call_recorded(tmp_path: Path) -> None:
    # Refused as a StoreError, the report failed on every resend, and with it everything
    # the call said after it (a NUL on PostgreSQL, an id reused for both sides anywhere).
    recorder = CallRecorder(f"sqlite:///{tmp_path / 'calls.db'}")
    call_id = await new_call(recorder)
    now = time.time()
    first = [
        (CallerTurnStarted("item_\x00"), now),
        (CallerTurnStarted("item_1"), now),
        (AgentTurnStarted("item_1"), now),
        (PhaseChanged("idle", "listening"), now),
    ]
    await recorder.report(call_id, first, seq=0, sender="actor-1")
    await recorder.report(call_id, [(FinishCall("caller_hung_up"), now + 1)], 4, "actor-1")
    assert await timeline(recorder, call_id) == [
        "problem:None",
        "problem:None",
        "phase:listening",
        "finished:None",
    ]
    await recorder.close()
