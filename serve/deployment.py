"""The Ray Serve ingress deployment: the FastAPI app of ``serve.api`` on a replica.

The replica builds its dependencies at start (the store, the Ray call
control, the live event feed) and hands them to ``build_app``. Live events
come from the recorder actors through one long poll per shard and replica
(``RecorderFeed``), then fan out in-process to every WebSocket viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError

from actors.ray_recorder import RayCallRecorder, database_url_digest
from actors.ray_wiring import (
    NAMESPACE,
    POOL_NAME,
    Handle,
    RayCallPool,
    recorder_name,
    shard_of,
    twilio_client,
)
from actors.recorder import POLL_LIMIT
from serve.api import build_app
from serve.auth import tokens_from_settings
from serve.control import RayCallControl
from serve.events import EventHub
from serve.ports import AppDeps
from serve.reconcile import Reconciler
from switchboard.errors import ConfigError
from switchboard.logs import configure_logging
from switchboard.settings import is_secret_param, load_settings
from switchboard.store import CallStore
from switchboard.store.database import database_url as store_url

__all__ = ["RecorderFeed", "SwitchboardIngress", "app", "ensure_call_actors", "url_for_recorder"]

log = logging.getLogger("switchboard.serve")
POLL_TIMEOUT_S = 15.0
# After a poll that brought events, let the next ones gather this long: at 60 calls the
# recorder logs hundreds of events a second, and one Ray call per handful of them cost
# the replica more CPU than the viewers' fan-out. Viewers see events up to 50 ms later.
GATHER_S = 0.05
# With no viewer on this replica, events only fill its replay: gather them for longer
# (a viewer that comes wakes the pumps at once), so idle replicas cost no poll a tick.
IDLE_GATHER_S = 0.5
OUTBOX_LIMIT = 10_000  # events the ingress publishes while a shard restarts (rare: webhooks)
# A poll's page (up to POLL_LIMIT) goes to the hub this many events per loop turn: a viewer
# that keeps up drains each chunk before the next, so its queue (256, 50 of them replay for
# a new viewer) never holds a page at once. Well under 256: a new viewer's sender starts a
# turn or two after it subscribed.
PUBLISH_CHUNK = 32


class RecorderFeed:
    """``EventFeed`` over the recorder shards' event logs.

    One pump per shard. A call's events all come from its own shard, so they stay in
    the order its shard logged them; events of different calls interleave as they come.

    What the ingress publishes goes out through one sender per shard, in order, and waits
    out a shard's restart (a call in flight when it died fails, and so may one made
    while it comes back): an event is sent again until the shard takes it, so a live viewer
    may see it twice. Up to ``OUTBOX_LIMIT`` events wait; past that they are dropped with a
    warning (the store has them all).
    """

    def __init__(
        self,
        recorders: Sequence[Handle],
        hub: EventHub | None = None,
        *,
        gather_s: float = GATHER_S,
        idle_gather_s: float = IDLE_GATHER_S,
    ) -> None:
        if not recorders:
            raise ValueError("a feed needs at least one recorder")
        self.recorders = tuple(recorders)
        self.hub = hub or EventHub()
        self.gather_s, self.idle_gather_s = gather_s, idle_gather_s
        self._viewer_came = asyncio.Event()
        self._outboxes: list[asyncio.Queue[dict[str, object]]] = [
            asyncio.Queue(OUTBOX_LIMIT) for _ in self.recorders
        ]
        self.dropped = 0  # live events published while their shard's outbox was full
        self._publishing = asyncio.Lock()  # one shard's page at a time (_publish_page)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, after: Sequence[int] | None = None) -> None:
        """Pump every shard, each from its number in ``after`` (all from 0 if None)."""
        after = list(after) if after is not None else [0] * len(self.recorders)
        if len(after) != len(self.recorders):
            raise ValueError(f"{len(after)} starting points for {len(self.recorders)} shards")
        self._tasks = [
            asyncio.ensure_future(self._pump(recorder, seq))
            for recorder, seq in zip(self.recorders, after, strict=True)
        ] + [
            asyncio.ensure_future(self._send(recorder, outbox))
            for recorder, outbox in zip(self.recorders, self._outboxes, strict=True)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def subscribe(self, call_id: str | None) -> AsyncIterator[dict[str, object]]:
        self._viewer_came.set()
        return self.hub.subscribe(call_id)

    def publish(self, call_id: str, event: dict[str, object]) -> None:
        # Through the call's shard, so every replica's viewers see it, in its call's order.
        message = {"call_id": call_id, **event}
        if "at" not in message:
            message["at"] = self.hub.now().isoformat()
        try:
            self._outboxes[shard_of(call_id, len(self.recorders))].put_nowait(message)
        except asyncio.QueueFull:  # the shard has been gone for long: the store has it
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # the 1st, 2nd, 4th...: no log flood
                log.warning(
                    "%d live events dropped: a recorder shard is not taking events", self.dropped
                )

    async def _send(self, recorder: Handle, outbox: asyncio.Queue[dict[str, object]]) -> None:
        while True:
            message = await outbox.get()
            delay = 0.05
            while True:
                try:
                    await recorder.publish.remote(message)
                    break
                except RayActorError:  # restarting, or died with it: it comes back
                    if delay == 0.05:
                        log.warning("a recorder shard is restarting; live events wait for it")
                    await asyncio.sleep(delay)  # a back-off while Ray restarts the shard
                    delay = min(2 * delay, 1.0)
                except Exception:  # not the shard's state: sending again would not help
                    log.exception("publishing a live event failed")
                    break

    async def _pump(self, recorder: Handle, after: int) -> None:
        while True:
            try:
                events, after = await recorder.poll.remote(after, POLL_TIMEOUT_S)
            except Exception:  # the recorder restarts: keep the viewers, try again
                log.exception("polling live events failed")
                await asyncio.sleep(1.0)  # back off before the next try
                continue
            await self._publish_page(events)
            if events and len(events) < POLL_LIMIT:  # a full page: more are waiting
                await self._gather()

    async def _publish_page(self, events: list[dict[str, object]]) -> None:
        """Hand a poll's events to the hub ``PUBLISH_CHUNK`` at a time, a loop turn before
        each chunk, so viewers woken by one chunk take it before the next. The hub drops a
        viewer whose queue overflows; a whole page at once would overflow one that keeps up.
        The lock keeps the other shards' pumps from adding their chunks in the same turn."""
        async with self._publishing:
            for start in range(0, len(events), PUBLISH_CHUNK):
                await asyncio.sleep(0)  # a turn for the viewers, not synchronisation
                for event in events[start : start + PUBLISH_CHUNK]:
                    self.hub.publish(str(event["call_id"]), event)

    async def _gather(self) -> None:
        """A batching period between polls, not synchronisation."""
        if self.hub.subscribed():
            await asyncio.sleep(self.gather_s)
            return
        self._viewer_came.clear()  # in the same step as the check: a viewer after it wakes us
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._viewer_came.wait(), self.idle_gather_s)


# The ingress replica's, the pool's and each recorder's CPU budget: each measured under a
# tenth of a core with 60 live calls (docs/benchmarks.md).
SERVICE_CPUS = 0.1


def url_for_recorder(database_url: str) -> str:
    """What a recorder is given: the URL, or, when it holds a secret (a password, also
    one in its query), a digest of it. A secret must not travel through Ray (an actor's
    arguments stay in the GCS): the recorder reads DATABASE_URL from its own environment,
    as the ingress did, and refuses to start if that is not the URL the digest names."""
    url = store_url(database_url)  # ConfigError, before any actor is asked to use it
    if url.password is None and not any(is_secret_param(name) for name in url.query):
        return database_url
    return database_url_digest(database_url)


async def ensure_call_actors(
    database_url: str, warm_actors: int = 2, recorder_shards: int = 1
) -> tuple[list[Handle], Handle]:
    """The recorder shards and the pool: found by name, or started (detached) if missing."""
    recorders = [
        RayCallRecorder.options(  # type: ignore[attr-defined]
            name=recorder_name(shard),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=SERVICE_CPUS,
            max_restarts=-1,  # a dead recorder comes back; call actors resend (recorder.py)
        ).remote(url_for_recorder(database_url))
        for shard in range(recorder_shards)
    ]
    await asyncio.gather(*(recorder.open.remote() for recorder in recorders))
    pool = RayCallPool.options(  # type: ignore[attr-defined]
        name=POOL_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=SERVICE_CPUS,
        max_restarts=-1,  # a dead pool comes back and adopts the running call actors
    ).remote(warm_actors)
    await pool.fill.remote()
    return recorders, pool


# SERVICE_CPUS, not Serve's default of 1: measured at 0.08 cores with 60 live calls, and on
# a 2-core machine a whole CPU for it left room for 40 call actors (0.02 each), not 100.
@serve.deployment(
    max_ongoing_requests=1000,
    graceful_shutdown_timeout_s=5,
    ray_actor_options={"num_cpus": SERVICE_CPUS},
)
@serve.ingress()
class SwitchboardIngress:
    deps: AppDeps

    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits it
        settings = load_settings(None)
        configure_logging(settings.log_level)
        if settings.switchboard_api_token is None:
            raise ConfigError("SWITCHBOARD_API_TOKEN must be set for the call API")
        self.store = await CallStore.open(settings.database_url)
        recorders, pool = await ensure_call_actors(
            settings.database_url,
            warm_actors=settings.warm_call_actors,
            recorder_shards=settings.recorder_shards,
        )
        self.feed = RecorderFeed(recorders)
        self.feed.start(after=await asyncio.gather(*(r.last_seq.remote() for r in recorders)))
        control = RayCallControl(settings, self.store, pool, twilio_client(settings))
        self.deps = AppDeps(
            settings, self.store, control, self.feed, tokens_from_settings(settings)
        )
        self.reconciler = Reconciler(self.deps)
        self.reconciler.start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_app(self.deps)


# `serve run serve.deployment:app` / `serve deploy serve/serve_config.yaml`
app = SwitchboardIngress.bind()  # type: ignore[attr-defined]
