"""The recorder as a Ray actor, in a module that does not import the store.

Ray imports the module that defines an actor class in every process that
runs it, and also in every process that holds a handle to it: a call actor's
``ray.get_actor(recorder_name(shard))`` loads this class to learn its methods. So
this module imports neither ``actors.recorder`` nor the store (SQLAlchemy,
Alembic, the database drivers: ~29 MB of every call actor's memory); the
recorder's process imports them when the actor is constructed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ray

from actors.ray_metrics import ray_call_metrics
from switchboard.call_actions import Action
from switchboard.logs import configure_logging
from switchboard.settings import load_settings

if TYPE_CHECKING:
    from actors.recorder import CallRecorder

__all__ = ["RayCallRecorder"]


@ray.remote
class RayCallRecorder:
    """``actors.recorder.CallRecorder``'s methods, delegated to one made in this process."""

    def __init__(self, database_url: str) -> None:
        from actors.recorder import CallRecorder  # deferred: see the module docstring

        configure_logging(load_settings(None).log_level)
        self.recorder: CallRecorder = CallRecorder(database_url, ray_call_metrics())

    async def open(self) -> None:
        await self.recorder.open()

    async def close(self) -> None:
        await self.recorder.close()

    async def report(
        self,
        call_id: str,
        batch: list[tuple[Action, float]],
        seq: int | None = None,
        sender: str = "",
    ) -> None:
        await self.recorder.report(call_id, batch, seq, sender)

    async def publish(self, event: dict[str, object]) -> None:
        await self.recorder.publish(event)

    async def last_seq(self) -> int:
        return await self.recorder.last_seq()

    async def poll(
        self, after: int, timeout_s: float = 15.0
    ) -> tuple[list[dict[str, object]], int]:
        return await self.recorder.poll(after, timeout_s)
