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
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import ray
from ray.actor import ActorHandle
from twilio.rest import Client

from actors.call_actor import CallActor, HangUpVia
from actors.pool import CallPool, Slot
from actors.recorder import CallRecorder
from switchboard.call_actions import Action
from switchboard.errors import ConfigError
from switchboard.settings import Settings, load_settings

__all__ = [
    "CALL_SLOT",
    "NAMESPACE",
    "POOL_NAME",
    "RECORDER_NAME",
    "RayCallActor",
    "RayCallPool",
    "RayCallRecorder",
    "twilio_client",
]

NAMESPACE = "switchboard"
POOL_NAME = "switchboard-pool"
RECORDER_NAME = "switchboard-recorder"
CALL_SLOT = "call_slot"
CALL_CPUS = 0.02  # measured: ~1-2% of a core per live call on this machine
CALL_MEMORY = 80 * 1024 * 1024  # the per-call PSS budget of the benchmark
Handle = ActorHandle[Any]


def twilio_client(settings: Settings) -> Client:
    if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
        raise ConfigError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are needed to place calls")
    client = Client(
        settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(), environment={}
    )
    if settings.twilio_api_base_url is not None:
        client.api.base_url = str(settings.twilio_api_base_url).rstrip("/")
    return client


def rest_hang_up(settings: Settings) -> HangUpVia:
    client = twilio_client(settings)

    async def hang_up(call_sid: str) -> None:
        await asyncio.to_thread(client.calls(call_sid).update, status="completed")

    return hang_up


class HandleReporter:
    def __init__(self, recorder: Handle) -> None:
        self.recorder = recorder

    async def report(self, call_id: str, batch: list[tuple[Action, float]]) -> None:
        await self.recorder.report.remote(call_id, batch)


@ray.remote
class RayCallActor(CallActor):
    def __init__(self, slot: str) -> None:
        settings = load_settings(None)
        recorder = ray.get_actor(RECORDER_NAME, namespace=NAMESPACE)
        super().__init__(slot, settings, HandleReporter(recorder), rest_hang_up(settings))


@ray.remote
class RayCallRecorder(CallRecorder):
    pass


class RaySlotFactory:
    """Starts call actors as named, detached Ray actors."""

    def __init__(self, media_host: str, options: dict[str, Any] | None = None) -> None:
        self.media_host = media_host
        self.options = {
            "namespace": NAMESPACE,
            "lifetime": "detached",
            "num_cpus": CALL_CPUS,
            "memory": CALL_MEMORY,
            "resources": {CALL_SLOT: 1},
            "max_restarts": 0,
            **(options or {}),
        }

    async def create(self) -> Slot[Handle]:
        name = f"call-{uuid.uuid4().hex}"
        handle = RayCallActor.options(name=name, **self.options).remote(name)  # type: ignore[attr-defined]
        address = await handle.start.remote(self.media_host)
        return Slot(name, handle, tuple(address))

    def finished(self, slot: Slot[Handle]) -> Any:
        return slot.handle.wait_finished.remote()

    async def retire(self, slot: Slot[Handle]) -> None:
        ray.kill(slot.handle, no_restart=True)


@ray.remote
class RayCallPool:
    """The singleton pool actor: hands out call actors, answers where a call lives."""

    def __init__(self, size: int, media_host: str, options: dict[str, Any] | None = None) -> None:
        self.pool: CallPool[Handle] = CallPool(RaySlotFactory(media_host, options), size)

    async def fill(self) -> int:
        await self.pool.fill()
        return self.pool.ready

    async def acquire(self, call_id: str) -> tuple[str, tuple[str, int]]:
        slot = await self.pool.acquire(call_id)
        return slot.name, slot.media_address

    async def locate(self, call_id: str) -> tuple[str, int] | None:
        return self.pool.locate(call_id)

    async def actor_name(self, call_id: str) -> str | None:
        slot = self.pool.slot(call_id)
        return None if slot is None else slot.name

    async def stats(self) -> dict[str, int]:
        return {"ready": self.pool.ready, "live": self.pool.live}

    async def close(self) -> None:
        await self.pool.close()
