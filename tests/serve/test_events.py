"""EventHub: fan-out, bounded queues that drop slow subscribers, replay, notice mapping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from serve.events import EventHub, Subscription, notice_event
from serve.ports import SUBSCRIPTION_DROPPED
from switchboard.call_actions import (
    AgentTranscriptGrew,
    AgentTurnFinished,
    AgentTurnInterrupted,
    AgentTurnStarted,
    CallerTurnStarted,
    CallerTurnTranscribed,
    Notice,
    PhaseChanged,
    ProblemNoted,
    ToolReturned,
    UsageReported,
)
from switchboard.realtime_events import Usage

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def hub(*, queue_size: int = 256, replay: int = 50, replay_calls: int = 1000) -> EventHub:
    return EventHub(queue_size=queue_size, replay=replay, replay_calls=replay_calls, now=Clock())


def drain(sub: Subscription) -> list[dict[str, object]]:
    """Everything queued right now, without waiting (the queue is read directly)."""
    out: list[dict[str, object]] = []
    while sub.pending:
        out.append(sub._items.popleft())
    return out


def types(messages: list[dict[str, object]]) -> list[object]:
    return [m["type"] for m in messages]


async def test_publish_stamps_call_id_type_and_time() -> None:
    h = hub()
    sub = h.subscribe("A")
    h.publish("A", {"type": "call.status", "status": "ringing"})
    h.publish("A", {"type": "x", "at": T0, "call_id": "forged"})
    first, second = await anext(sub), await anext(sub)
    assert first == {
        "call_id": "A",
        "type": "call.status",
        "at": (T0 + timedelta(seconds=1)).isoformat(),
        "status": "ringing",
    }
    assert list(first) == ["call_id", "type", "at", "status"]
    # The publisher's own time is kept (as ISO text); the call id cannot be overridden.
    assert second == {"call_id": "A", "type": "x", "at": T0.isoformat()}


@pytest.mark.parametrize("event", [{}, {"type": ""}, {"type": 3}])
def test_an_event_without_a_type_is_refused(event: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="type"):
        hub().publish("A", event)


async def test_fan_out_per_call_and_to_all_calls() -> None:
    h = hub()
    a1, a2, b, every = h.subscribe("A"), h.subscribe("A"), h.subscribe("B"), h.subscribe(None)
    h.publish("A", {"type": "one"})
    h.publish("B", {"type": "two"})
    h.publish("C", {"type": "three"})
    assert types(drain(a1)) == types(drain(a2)) == ["one"]
    assert types(drain(b)) == ["two"]
    assert [(m["call_id"], m["type"]) for m in drain(every)] == [
        ("A", "one"),
        ("B", "two"),
        ("C", "three"),
    ]
    assert (h.subscriber_count("A"), h.subscriber_count("B"), h.subscriber_count()) == (2, 1, 1)


async def test_no_one_is_subscribed_once_the_last_viewer_of_a_call_leaves() -> None:
    # The event pump idles while nobody watches: an empty group would keep it polling.
    h = hub()
    sub = h.subscribe("c1")
    assert h.subscribed()
    await sub.aclose()
    assert not h.subscribed() and h.subscriber_count("c1") == 0


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    h = hub()
    sub = h.subscribe("A")
    waiter = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)  # let it block on the empty queue
    assert not waiter.done()
    h.publish("A", {"type": "ping"})
    assert (await waiter)["type"] == "ping"


async def test_slow_subscriber_is_dropped_with_a_reason_and_others_keep_going() -> None:
    h = hub(queue_size=3, replay=0)
    slow, fast, every = h.subscribe("A"), h.subscribe("A"), h.subscribe(None)
    received: list[object] = []
    for n in range(3):
        h.publish("A", {"type": f"e{n}"})
        received += types(drain(fast)) + types(drain(every))
    h.publish("A", {"type": "e3"})  # slow has 3 waiting: this one overflows it
    received += types(drain(fast)) + types(drain(every))
    assert received == ["e0", "e0", "e1", "e1", "e2", "e2", "e3", "e3"]
    assert h.subscriber_count("A") == 1 and h.dropped_total == 1
    # The dropped subscriber loses its backlog, learns why, and then ends.
    last = await anext(slow)
    assert last["type"] == SUBSCRIPTION_DROPPED
    assert last["call_id"] == "A"
    assert "too slow" in str(last["reason"]) and "3" in str(last["reason"])
    with pytest.raises(StopAsyncIteration):
        await anext(slow)
    h.publish("A", {"type": "after"})
    assert types(drain(fast)) == ["after"]


def test_publishing_never_blocks_even_with_nobody_reading() -> None:
    # Synchronous on purpose: publish has no await, so a thousand calls return
    # without any event loop turning.
    h = EventHub(queue_size=8, replay=4)
    subs = [h.subscribe("A") for _ in range(5)]
    for n in range(1000):
        h.publish("A", {"type": "tick", "n": n})
    assert h.subscriber_count("A") == 0
    assert h.dropped_total == 5
    assert all(s._dropped is not None for s in subs)


async def test_late_subscriber_gets_the_last_n_events_of_its_call_then_live_ones() -> None:
    h = hub(replay=3)
    for n in range(5):
        h.publish("A", {"type": "a", "n": n})
        h.publish("B", {"type": "b", "n": n})
    late = h.subscribe("A")
    h.publish("A", {"type": "a", "n": 5})
    assert [m["n"] for m in drain(late)] == [2, 3, 4, 5]
    every = h.subscribe(None)
    assert [(m["call_id"], m["n"]) for m in drain(every)] == [("A", 4), ("B", 4), ("A", 5)]


async def test_replay_forgets_the_least_recently_active_calls() -> None:
    h = hub(replay=2, replay_calls=2)
    h.publish("A", {"type": "a"})
    h.publish("B", {"type": "b"})
    h.publish("A", {"type": "a2"})  # A is now the most recent
    h.publish("C", {"type": "c"})  # evicts B
    assert types(drain(h.subscribe("A"))) == ["a", "a2"]
    assert types(drain(h.subscribe("B"))) == []
    assert types(drain(h.subscribe("C"))) == ["c"]


async def test_aclose_unsubscribes_and_ends_the_iterator() -> None:
    h = hub()
    sub = h.subscribe("A")
    every = h.subscribe(None)
    h.publish("A", {"type": "pending"})
    await sub.aclose()
    await sub.aclose()  # idempotent
    await every.aclose()
    assert h.subscriber_count("A") == 0 and h.subscriber_count() == 0
    with pytest.raises(StopAsyncIteration):
        await anext(sub)
    h.publish("A", {"type": "later"})
    assert sub.pending == 0


async def test_close_ends_every_subscription() -> None:
    h = hub()
    subs = [h.subscribe("A"), h.subscribe(None)]
    waiters = [asyncio.create_task(anext(s)) for s in subs]
    await asyncio.sleep(0)
    h.close()
    for waiter in waiters:
        with pytest.raises(StopAsyncIteration):
            await waiter
    assert h.subscriber_count("A") == 0 and h.subscriber_count() == 0


@pytest.mark.parametrize(
    "kwargs", [{"queue_size": 0}, {"queue_size": 2, "replay": 3}, {"replay_calls": 0}]
)
def test_bad_limits_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        EventHub(**kwargs)  # type: ignore[arg-type]


USAGE = Usage(total_tokens=30, input_tokens=10, output_tokens=20, output_audio_tokens=15)


@pytest.mark.parametrize(
    ("notice", "expected"),
    [
        (
            PhaseChanged("greeting", "talking"),
            {"type": "call.phase", "old": "greeting", "new": "talking"},
        ),
        (CallerTurnStarted("i1"), {"type": "transcript.caller_started", "item_id": "i1"}),
        (
            ToolReturned("call_1", '{"ok": true}'),
            {"type": "tool.returned", "tool_call_id": "call_1", "output": '{"ok": true}'},
        ),
        (
            CallerTurnTranscribed("i1", "hello"),
            {"type": "transcript.caller", "item_id": "i1", "text": "hello"},
        ),
        (AgentTurnStarted("i2"), {"type": "transcript.agent_started", "item_id": "i2"}),
        (
            AgentTranscriptGrew("i2", "Hi"),
            {"type": "transcript.agent_delta", "item_id": "i2", "delta": "Hi"},
        ),
        (
            AgentTurnFinished("i2", "Hi there"),
            {"type": "transcript.agent_done", "item_id": "i2", "text": "Hi there"},
        ),
        (
            AgentTurnInterrupted("i2", 400, 1200),
            {
                "type": "transcript.agent_interrupted",
                "item_id": "i2",
                "heard_ms": 400,
                "generated_ms": 1200,
                "by": "caller",
            },
        ),
        (
            AgentTurnInterrupted("i3", 300, 900, by="end"),
            {
                "type": "transcript.agent_interrupted",
                "item_id": "i3",
                "heard_ms": 300,
                "generated_ms": 900,
                "by": "end",
            },
        ),
        (
            UsageReported("r1", USAGE),
            {
                "type": "usage",
                "response_id": "r1",
                "usage": {
                    "total_tokens": 30,
                    "input_tokens": 10,
                    "output_tokens": 20,
                    "input_audio_tokens": 0,
                    "input_text_tokens": 0,
                    "input_cached_tokens": 0,
                    "output_audio_tokens": 15,
                    "output_text_tokens": 0,
                },
            },
        ),
        (
            ProblemNoted("twilio", "bad_frame", "frame had no payload", fatal=True),
            {
                "type": "problem",
                "source": "twilio",
                "reason": "bad_frame",
                "message": "frame had no payload",
                "fatal": True,
            },
        ),
    ],
)
def test_notice_event(notice: Notice, expected: dict[str, object]) -> None:
    assert notice_event(notice) == expected
