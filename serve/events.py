"""Live call events in one process: fan-out, bounded queues, replay.

:class:`EventHub` implements the ``EventFeed`` port. ``publish`` is plain
synchronous code: it stamps the message, keeps it for replay and appends it to
each subscriber's queue. It never awaits, so a publisher (a webhook, a call
actor's reporter) is never held up by a reader. Each subscriber's queue is
bounded; one that is full when an event arrives belongs to a reader that is
not keeping up, so that subscriber is dropped: its queue is discarded and its
iterator yields one ``subscription.dropped`` message with the reason, then
ends. The reader can reconnect and catch up from the replay. A reader only
drains while its task runs, so a publisher with many events at once hands them
over in chunks well under the queue, a loop turn apart (the recorder feed's
pages, ``serve.deployment``): one synchronous burst larger than the queue drops
even a reader that keeps up.

Replay: the last ``replay`` events of each call (for calls seen recently; the
least recently active are forgotten past ``replay_calls``) and the last
``replay`` events overall. A new subscriber gets those first, then live ones;
registration and the replay snapshot happen in one synchronous step, so no
event falls between them.

Messages are ``{"call_id", "type", "at", ...}``; ``at`` is an ISO 8601 string.
One message dict is shared by every subscriber: treat it as read-only. Event
types published by the ingress: ``call.created``, ``call.status``,
``call.amd``, ``call.hangup_requested``; :func:`notice_event` maps the call
policy's notices to ``call.phase``, ``transcript.*``, ``tool.returned``,
``usage`` and ``problem``.

The hub belongs to one event loop: call ``publish`` from that loop's thread.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from serve.ports import SUBSCRIPTION_DROPPED
from switchboard.live_events import notice_event

__all__ = ["EventHub", "Subscription", "notice_event"]

Message = dict[str, object]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Subscription:
    """One subscriber's bounded queue, read as an async iterator of messages."""

    def __init__(
        self, hub: EventHub, call_id: str | None, limit: int, backlog: Iterable[Message]
    ) -> None:
        self.call_id = call_id
        self._hub = hub
        self._limit = limit
        self._items: deque[Message] = deque(backlog)
        self._wake = asyncio.Event()
        self._dropped: str | None = None
        self._ended = False

    @property
    def pending(self) -> int:
        return len(self._items)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._items:
                return self._items.popleft()
            if self._dropped is not None:
                reason, self._dropped, self._ended = self._dropped, None, True
                return {
                    "call_id": self.call_id,
                    "type": SUBSCRIPTION_DROPPED,
                    "at": self._hub.now().isoformat(),
                    "reason": reason,
                }
            if self._ended:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        """Stop receiving; the iterator ends. Safe to call more than once."""
        self._hub._remove(self)
        self._items.clear()
        self._dropped, self._ended = None, True
        self._wake.set()

    # -- called by the hub -----------------------------------------------------

    def _offer(self, message: Message) -> bool:
        if len(self._items) >= self._limit:
            return False
        self._items.append(message)
        self._wake.set()
        return True

    def _drop(self, reason: str) -> None:
        self._items.clear()
        self._dropped = reason
        self._wake.set()

    def _end(self) -> None:
        self._ended = True
        self._wake.set()


class EventHub:
    def __init__(
        self,
        *,
        queue_size: int = 256,
        replay: int = 50,
        replay_calls: int = 1000,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        if queue_size < 1 or not 0 <= replay <= queue_size or replay_calls < 1:
            raise ValueError("need queue_size >= 1, 0 <= replay <= queue_size, replay_calls >= 1")
        self.now = now
        self._queue_size = queue_size
        self._replay = replay
        self._replay_calls = replay_calls
        self._by_call: dict[str, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        self._recent: OrderedDict[str, deque[Message]] = OrderedDict()
        self._recent_all: deque[Message] = deque(maxlen=replay)
        self.dropped_total = 0

    def subscribe(self, call_id: str | None) -> Subscription:
        if call_id is None:
            sub = Subscription(self, None, self._queue_size, self._recent_all)
            self._everything.add(sub)
        else:
            sub = Subscription(self, call_id, self._queue_size, self._recent.get(call_id, ()))
            self._by_call.setdefault(call_id, set()).add(sub)
        return sub

    def publish(self, call_id: str, event: dict[str, object]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"an event needs a non-empty string 'type', got {kind!r}")
        at = event.get("at")
        if at is None:
            at = self.now()
        message: Message = {
            "call_id": call_id,
            "type": kind,
            "at": at.isoformat() if isinstance(at, datetime) else at,
        }
        message.update((k, v) for k, v in event.items() if k not in message)
        self._remember(call_id, message)
        for sub in (*self._by_call.get(call_id, ()), *self._everything):
            if not sub._offer(message):
                self._remove(sub)
                self.dropped_total += 1
                sub._drop(f"subscriber too slow: {self._queue_size} events were waiting")

    def subscribed(self) -> bool:
        """Whether anyone is subscribed, to one call or to all."""
        return bool(self._everything or self._by_call)

    def subscriber_count(self, call_id: str | None = None) -> int:
        """Subscribers of one call, or of every call for ``None``."""
        if call_id is None:
            return len(self._everything)
        return len(self._by_call.get(call_id, ()))

    def close(self) -> None:
        """End every subscription (server shutdown); their iterators stop."""
        subs = [*self._everything, *(s for group in self._by_call.values() for s in group)]
        self._everything.clear()
        self._by_call.clear()
        for sub in subs:
            sub._end()

    def _remember(self, call_id: str, message: Message) -> None:
        if self._replay == 0:
            return
        self._recent_all.append(message)
        ring = self._recent.get(call_id)
        if ring is None:
            ring = self._recent[call_id] = deque(maxlen=self._replay)
            while len(self._recent) > self._replay_calls:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(call_id)
        ring.append(message)

    def _remove(self, sub: Subscription) -> None:
        if sub.call_id is None:
            self._everything.discard(sub)
            return
        group = self._by_call.get(sub.call_id)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._by_call[sub.call_id]
