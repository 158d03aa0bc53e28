"""Where the call actors, their pool and the recorder become Ray actors.

Everything else in ``actors/`` is plain Python; this module applies Ray:
names, the app's namespace, detached lifetimes with explicit cleanup, and
the resources each call asks for. A call actor requests one ``call_slot``
(a custom resource each node advertises: how many calls it may carry) and
its memory, so placement and the autoscaler see what a call costs; its CPU
share is small and real (``CALL_CPUS``), as measured in docs/media-path.md.

Secrets never travel through Ray: every actor reads its settings from its
own process environment (the raylet's, inherited from ``ray start`` or the
pod spec).

The recorder may be several actors (``RECORDER_SHARDS``): each call's reports go
to the one its id maps to (``shard_of``), so one call's record stays in order
while the writing spreads over processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorDiedError, ActorUnavailableError
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from actors.call_actor import CallActor, HangUpVia, StatusVia
from actors.pool import CallPool, Slot
from actors.ray_cancels import KvCancels
from actors.ray_metrics import ray_pool_metrics, watch_pool
from actors.twilio_rest import end_call, twilio_call
from switchboard.call_actions import Action
from switchboard.errors import CallCanceled, ConfigError
from switchboard.logs import configure_logging
from switchboard.settings import Settings, load_settings

__all__ = [
    "CALL_SLOT",
    "NAMESPACE",
    "POOL_NAME",
    "HandleReporter",
    "RayCallActor",
    "RayCallPool",
    "recorder_handles",
    "recorder_name",
    "shard_of",
    "through_restarts",
    "twilio_client",
]

NAMESPACE = "switchboard"
POOL_NAME = "switchboard-pool"
RECORDER_PREFIX = "switchboard-recorder"
CALL_SLOT = "call_slot"
CALL_ACTOR_PREFIX = "call-"  # every call actor's name: how a restarted pool finds them
LOST_CHECK_S = 2.0  # a ready call actor's liveness check waits no longer than this
DESCRIBE_S = 10.0  # a call actor that does not say what it does by then is asked again
LATE_ADOPT_S = 300.0  # ... until this long after the pool started, then killed
ADOPT_RETRY_S = 10.0  # listing the running call actors failed: tried again after this
CALL_CPUS = 0.02  # a placement budget; measured in a call here: 2-3% of a core (benchmarks.md)
CALL_MEMORY = 80 * 1024 * 1024  # the per-call PSS budget of the benchmark
# A call actor serves up to this many calls, one at a time, before it is retired: starting
# one costs about a second of CPU here, a call's leftovers (allocator fragmentation) stay.
CALLS_PER_ACTOR = 20
RESTART_WAIT_S = 10.0  # how long a caller waits for a restarting pool or recorder
UNREACHABLE_RETRY_S = 1.0  # between waits on a call actor Ray cannot reach for now
TWILIO_TIMEOUT_S = 15.0  # one REST request; Twilio answers in well under a second
Handle = ActorHandle[Any]
T = TypeVar("T")
log = logging.getLogger(__name__)


async def through_restarts(call: Callable[[], Awaitable[T]], wait_s: float = RESTART_WAIT_S) -> T:
    """``call()``, made again while the actor it calls is being restarted (Ray answers
    ``ActorUnavailableError`` meanwhile) for up to ``wait_s``. Only for calls that are
    safe to repeat: the first may or may not have run."""
    give_up = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return await call()
        except ActorUnavailableError:
            if time.monotonic() + delay > give_up:
                raise
            await asyncio.sleep(delay)  # a back-off while Ray restarts the actor
            delay = min(2 * delay, 1.0)


def twilio_client(settings: Settings) -> Client:
    if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
        raise ConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are needed to place calls")
    client = Client(
        settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
        environment={},
        # Without one, a Twilio that never answers holds POST /calls (and its thread) forever.
        http_client=TwilioHttpClient(timeout=TWILIO_TIMEOUT_S),
    )
    if settings.twilio_api_base_url is not None:
        client.api.base_url = str(settings.twilio_api_base_url).rstrip("/")
    return client


def rest_calls(settings: Settings) -> tuple[HangUpVia, StatusVia]:
    """Twilio's REST API for a call actor: end a call, and read a call's status (None
    when Twilio has no such call)."""
    client = twilio_client(settings)

    async def hang_up(call_sid: str) -> None:
        await end_call(client, call_sid)  # over already (its socket closed first): done

    async def status(call_sid: str) -> str | None:
        try:
            fetched = await twilio_call(client.calls(call_sid).fetch)
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise
        return str(fetched.status)

    return hang_up, status


def recorder_name(shard: int) -> str:
    return f"{RECORDER_PREFIX}-{shard}"


def shard_of(call_id: str, shards: int) -> int:
    """The recorder shard of call ``call_id``, the same in every process (``hash()`` of
    a string is salted per process; CRC-32 is not)."""
    if shards < 1:
        raise ValueError(f"a recorder needs at least one shard, not {shards}")
    return zlib.crc32(call_id.encode()) % shards


def recorder_handles(shards: int) -> list[Handle]:
    """The running recorder shards, found by name."""
    return [ray.get_actor(recorder_name(i), namespace=NAMESPACE) for i in range(shards)]


class HandleReporter:
    """Sends each call's reports to its recorder shard."""

    def __init__(self, recorders: Sequence[Handle]) -> None:
        if not recorders:
            raise ValueError("a reporter needs at least one recorder")
        self.recorders = tuple(recorders)

    async def report(
        self,
        call_id: str,
        batch: list[tuple[Action, float]],
        seq: int | None = None,
        sender: str = "",
    ) -> None:
        shard = self.recorders[shard_of(call_id, len(self.recorders))]
        await through_restarts(lambda: shard.report.remote(call_id, batch, seq, sender))

    async def actor_died(self, call_id: str, cause: str, at: float) -> None:
        shard = self.recorders[shard_of(call_id, len(self.recorders))]
        await through_restarts(lambda: shard.actor_died.remote(call_id, cause, at))


@ray.remote
class RayCallActor(CallActor):
    def __init__(self, slot: str) -> None:
        settings = load_settings(None)
        configure_logging(settings.log_level)
        reporter = HandleReporter(recorder_handles(settings.recorder_shards))
        hang_up, status = rest_calls(settings)
        super().__init__(slot, settings, reporter, hang_up, status_via_rest=status)
        # Everything imported so far lives as long as the process: keep it out of
        # every later collection (Ray also asks workers for full ones).
        gc.freeze()

    async def start(self, host: str | None = None) -> tuple[str, int]:
        """Listen on this actor's own node (Ray may place it on any), unless told where."""
        return await super().start(host or own_media_host())


def own_media_host() -> str:
    """Where this process's call actors listen for the edges: ``SWITCHBOARD_MEDIA_HOST``
    if its node sets one, else the node's address (reachable from the other nodes)."""
    return os.environ.get("SWITCHBOARD_MEDIA_HOST") or ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]


class RaySlotFactory:
    """Starts call actors as named, detached Ray actors."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = {
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "num_cpus": CALL_CPUS,
            "memory": CALL_MEMORY,
            "resources": {CALL_SLOT: 1},
            # Over the nodes, not packed onto the pool's: Ray's default fills the caller's
            # node to half its call slots first, and a call's real cost is CPU.
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,
            **(options or {}),
        }
        self.starting: set[str] = set()  # names of the actors being created now
        needs = {"CPU": self.options["num_cpus"], "memory": self.options["memory"]}
        needs |= self.options["resources"]
        self.needs: dict[str, float] = {k: float(v) for k, v in needs.items() if v}

    async def create(self) -> Slot[Handle]:
        name = f"{CALL_ACTOR_PREFIX}{uuid.uuid4().hex}"
        handle = RayCallActor.options(name=name, **self.options).remote(name)  # type: ignore[attr-defined]
        self.starting.add(name)
        try:
            address = await handle.start.remote()  # on its own node's address
        except BaseException:  # failed or cancelled: a detached actor would keep its slot
            ray.kill(handle, no_restart=True)
            raise
        finally:
            self.starting.discard(name)
        return Slot(name, handle, tuple(address))

    async def free_slots(self) -> int:
        """How many more call actors fit in what Ray has free now (slots, CPU, memory).

        One GCS round trip (~0.35 ms). It is current within ~1 ms of an actor
        starting, never subtracts actors still waiting for a slot, and shows a
        killed actor's slot ~70 ms after ``ray.kill``. Summed over nodes: exact on
        one node, an upper bound when free slots are scattered over several.
        """
        free = await asyncio.to_thread(ray.available_resources)
        return min(int(free.get(name, 0.0) / need + 1e-9) for name, need in self.needs.items())

    async def existing(
        self, skip: Collection[str] = ()
    ) -> tuple[list[Slot[Handle]], dict[str, Slot[Handle]], list[tuple[str, Handle]]]:
        """The call actors already running (a pool before this one started them): the
        ready ones, the live ones by call id (a call being wrapped up has no media
        address any more: it needs none), and those that did not answer in time (still
        starting, or busy in a burst), by name. One with neither a call nor an address
        (it was starting when its pool died) is retired. Those named in ``skip`` (the
        asking pool's own) are left out, untouched."""
        named = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        names = [
            n["name"]
            for n in named
            if n["namespace"] == NAMESPACE
            and n["name"].startswith(CALL_ACTOR_PREFIX)
            and n["name"] not in skip
        ]
        found = await asyncio.gather(*(self.describe(name) for name in names))
        ready: list[Slot[Handle]] = []
        live: dict[str, Slot[Handle]] = {}
        silent: list[tuple[str, Handle]] = []
        for name, handle, answer in found:
            if handle is None:
                continue
            if answer is None:
                silent.append((name, handle))
                continue
            slot = await self.sort(name, handle, answer)
            if isinstance(slot, tuple):
                live[slot[0]] = slot[1]
            elif slot is not None:
                ready.append(slot)
        return ready, live, silent

    async def sort(
        self, name: str, handle: Handle, answer: tuple[str | None, Any]
    ) -> Slot[Handle] | tuple[str, Slot[Handle]] | None:
        """What an actor's ``describe`` answer makes it: a ready slot, a live call's
        ``(call id, slot)``, or None (retired: it has neither)."""
        call_id, address = answer
        if call_id is not None:
            return call_id, Slot(name, handle, tuple(address or ("", 0)))
        if address is not None:
            return Slot(name, handle, tuple(address))
        await self.retire(Slot(name, handle, ("", 0)))
        return None

    @staticmethod
    async def describe(name: str) -> tuple[str, Handle | None, tuple[str | None, Any] | None]:
        """``(name, handle, answer)``: no handle if the actor is gone, no answer if it
        did not give one within ``DESCRIBE_S``."""
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except Exception as exc:  # gone since listed
            log.warning("call actor %s was not adopted: %s", name, exc)
            return name, None, None
        try:
            answer: tuple[str | None, Any] = await asyncio.wait_for(
                handle.describe.remote(), DESCRIBE_S
            )
        except TimeoutError:
            return name, handle, None
        except Exception as exc:  # died since listed
            log.warning("call actor %s was not adopted: %s", name, exc)
            return name, None, None
        return name, handle, answer

    async def lost(self, slot: Slot[Handle]) -> bool:
        """Whether a ready actor died while it waited (one round trip, as the pool hands it
        out). One that is slow to answer or unreachable for a moment is not lost: on a
        busy machine that is load, and retiring it would start a cold actor for the call."""
        try:
            await asyncio.wait_for(slot.handle.describe.remote(), LOST_CHECK_S)
        except ActorDiedError:
            return True
        except (ActorUnavailableError, TimeoutError):
            pass
        return False

    async def finished(self, slot: Slot[Handle]) -> str:
        # Asked again while the actor is unreachable for a moment (its node's link, not
        # its death): the pool kills an actor whose wait fails, and with it a live call.
        # ``max_restarts=0``: an actor that died raises ``ActorDiedError`` instead.
        while True:
            try:
                reason: str = await slot.handle.wait_finished.remote()
                return reason
            except ActorUnavailableError:
                await asyncio.sleep(UNREACHABLE_RETRY_S)  # a back-off, not synchronisation

    async def recycle(self, slot: Slot[Handle]) -> Slot[Handle] | None:
        address = await slot.handle.recycle.remote(CALLS_PER_ACTOR)
        return None if address is None else Slot(slot.name, slot.handle, tuple(address))

    async def retire(self, slot: Slot[Handle]) -> None:
        ray.kill(slot.handle, no_restart=True)


@ray.remote
class RayCallPool:
    """The singleton pool actor: hands out call actors, answers where a call lives.

    Ray restarts it if it dies (``max_restarts=-1``); the new one first adopts the
    call actors already running (``RaySlotFactory.existing``), on the first call it
    gets: it needs the actor's event loop, which ``__init__`` does not run in.
    """

    def __init__(self, size: int, options: dict[str, Any] | None = None) -> None:
        settings = load_settings(None)
        configure_logging(settings.log_level)
        self.factory = RaySlotFactory(options)
        self.pool: CallPool[Handle] = CallPool(
            self.factory, size, on_failed=self._record_death, lost=self.factory.lost
        )
        self._cancels = KvCancels(NAMESPACE)  # outlive this pool (``actors/ray_cancels.py``)
        self._cancels_read = False  # those a pool before this one kept: read once
        self._reading_cancels = asyncio.Lock()
        self._noting: dict[str, asyncio.Task[None]] = {}  # a cancel on its way to the GCS
        self._recorder_shards = settings.recorder_shards
        self._reporter: HandleReporter | None = None
        self._gauges: asyncio.Task[None] | None = None
        self._adopting: asyncio.Task[None] | None = None
        # Call actors adopted once they answer, with their handles.
        self._late: list[tuple[asyncio.Task[None], Handle]] = []
        self._adopt_failed = False  # running actors may be unknown to this pool
        self._adopt_again_at = 0.0  # monotonic: when a failed takeover is tried again

    async def _record_death(self, call_id: str, exc: Exception) -> None:
        """A call's actor died: it cannot tell how its call ended, so the pool does (the
        media socket went with it: Twilio ends the call and reports its status)."""
        if self._reporter is None:  # a GCS lookup: off the pool's loop
            handles = await asyncio.to_thread(recorder_handles, self._recorder_shards)
            self._reporter = HandleReporter(handles)
        # The recorder knows whether the call had ended before: then this is no end of it.
        await self._reporter.actor_died(call_id, type(exc).__name__, time.time())

    async def _adopted(self) -> None:
        if self._adopting is None or (
            self._adopt_failed and time.monotonic() >= self._adopt_again_at
        ):
            self._adopting = asyncio.ensure_future(self._adopt())
        await asyncio.shield(self._adopting)

    async def _adopt(self) -> None:
        """Take over the call actors running before this pool (once; again later if
        listing them failed: until then ``serves`` cannot say a call has no actor)."""
        try:
            # Not this pool's own: started since a takeover that failed, and handed out.
            known = self.pool.known_names() | self.factory.starting
            ready, live, silent = await self.factory.existing(skip=known)
        except Exception:  # the pool works without: actors it cannot see stay unused
            log.exception("adopting running call actors failed; trying again later")
            self._adopt_failed = True
            self._adopt_again_at = time.monotonic() + ADOPT_RETRY_S
            return
        self._adopt_failed = False
        self.pool.adopt(ready, live)
        if ready or live:
            log.warning("adopted %d ready call actors and %d live calls", len(ready), len(live))
        self._late += [
            (asyncio.ensure_future(self._adopt_late(name, handle)), handle)
            for name, handle in silent
        ]
        if self._gauges is None:
            self._gauges = asyncio.ensure_future(watch_pool(self.pool, ray_pool_metrics()))

    async def _adopt_late(self, name: str, handle: Handle) -> None:
        """A call actor that did not say what it does in time is asked again until it
        does, then adopted like the rest. Owned by no pool it would hold its slot for
        good, so one silent for ``LATE_ADOPT_S`` is killed."""
        give_up = time.monotonic() + LATE_ADOPT_S
        while time.monotonic() < give_up:
            _, alive, answer = await self.factory.describe(name)
            if alive is None:
                return  # died meanwhile: its slot is free again
            if answer is not None:
                slot = await self.factory.sort(name, handle, answer)
                if isinstance(slot, tuple):
                    self.pool.adopt([], {slot[0]: slot[1]})
                elif slot is not None:
                    self.pool.adopt([slot], {})
                log.warning("adopted call actor %s late", name)
                return
        log.error("call actor %s never said what it does: killed", name)
        ray.kill(handle, no_restart=True)

    async def fill(self) -> int:
        await self._adopted()
        await self.pool.fill()
        return self.pool.ready

    async def _read_cancels(self) -> None:
        """Before this pool hands out an actor or takes a cancel: the cancels a crashed
        pool before it kept. Raises while the GCS cannot say (a placing then fails
        rather than dial a call that may have been hung up)."""
        async with self._reading_cancels:
            if not self._cancels_read:
                self.pool.restore_canceled(await self._cancels.recent())
                self._cancels_read = True

    async def acquire(self, call_id: str) -> tuple[str, tuple[str, int]]:
        await self._adopted()
        await self._read_cancels()
        try:
            slot = await self.pool.acquire(call_id)
        except CallCanceled:
            # After its note (else the note would land last and stay); a key left by a
            # failure here ages out at a later takeover.
            with contextlib.suppress(Exception):
                if (noting := self._noting.get(call_id)) is not None:
                    await noting
                await self._cancels.forget(call_id)
            raise
        return slot.name, slot.media_address

    async def locate(self, call_id: str) -> tuple[str, int] | None:
        await self._adopted()
        return self.pool.locate(call_id)

    async def actor_name(self, call_id: str) -> str | None:
        await self._adopted()
        slot = self.pool.slot(call_id)
        return None if slot is None else slot.name

    async def cancel(self, call_id: str, placing: bool = False) -> bool:
        """Hang up a call still waiting for its actor (``CallPool.cancel``)."""
        await self._adopted()
        await self._read_cancels()
        if not self.pool.cancel(call_id, placing):
            return False
        # Kept for a pool started after this one dies before the call asks or its actor
        # is up. One note per call at a time: a repeated hang-up waits for the first.
        noting = self._noting.get(call_id)
        if noting is None:
            noting = self._noting[call_id] = asyncio.ensure_future(self._note(call_id))
            noting.add_done_callback(lambda _: self._noting.pop(call_id, None))
        await asyncio.shield(noting)
        return True

    async def _note(self, call_id: str) -> None:
        try:
            await self._cancels.note(call_id)
        except Exception as exc:  # this pool still cancels it
            log.warning("call %s: keeping its cancel outside the pool failed: %s", call_id, exc)

    async def serves(self, call_id: str) -> bool | None:
        """Whether an actor serves the call (or is being started for it); None when this
        pool cannot tell: some running actor has not yet said what it does, or taking
        them over failed. The reconciler settles no call on a None."""
        await self._adopted()
        if self.pool.serves(call_id):
            return True
        if self._adopt_failed or any(not task.done() for task, _ in self._late):
            return None
        return False

    async def ready_names(self) -> list[str]:
        """The ready actors' names, next to be handed out first."""
        await self._adopted()
        return self.pool.ready_names()

    async def stats(self) -> dict[str, int]:
        await self._adopted()
        pool = self.pool
        return {
            "ready": pool.ready,
            "live": pool.live,
            "starting": pool.starting,
            "recycled": pool.recycled,
            "size": pool.size,
        }

    async def close(self) -> None:
        if self._gauges is not None:
            self._gauges.cancel()
        for task, handle in self._late:  # not adopted yet: owned by no pool, so ours to end
            if not task.done():
                task.cancel()
                ray.kill(handle, no_restart=True)
        await self.pool.close()
