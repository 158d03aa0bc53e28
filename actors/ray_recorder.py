"""The recorder as a Ray actor, in a module that does not import the store.

Ray imports the module that defines an actor class in every process that
runs it, and also in every process that holds a handle to it: a call actor's
``ray.get_actor(recorder_name(shard))`` loads this class to learn its methods. So
this module imports neither ``actors.recorder`` nor the store (SQLAlchemy,
Alembic, the database drivers: ~29 MB of every call actor's memory); the
recorder's process imports them when the actor is constructed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import ray

from actors.ray_metrics import ray_call_metrics
from switchboard.call_actions import Action
from switchboard.errors import ConfigError
from switchboard.logs import configure_logging
from switchboard.settings import load_settings, redact_url

if TYPE_CHECKING:
    from actors.recorder import CallRecorder

__all__ = ["DIGEST_PREFIX", "RayCallRecorder", "database_url_digest"]

DIGEST_PREFIX = "sha256:"


def database_url_digest(database_url: str) -> str:
    """What names a database URL holding a secret, where the URL must not go (Ray): a
    digest of it without its secrets (a digest of a password could be guessed back)."""
    shown = redact_url(database_url).encode("utf-8", "surrogatepass")
    return DIGEST_PREFIX + hashlib.sha256(shown).hexdigest()


@ray.remote
class RayCallRecorder:
    """``actors.recorder.CallRecorder``'s methods, delegated to one made in this process."""

    def __init__(self, database_url: str) -> None:
        """``database_url``, or ``database_url_digest`` of one that holds a secret: then
        this process's own DATABASE_URL, which must be the one digested."""
        from actors.recorder import CallRecorder  # deferred: see the module docstring

        settings = load_settings(None)
        configure_logging(settings.log_level)
        url = database_url
        if database_url.startswith(DIGEST_PREFIX):
            url = settings.database_url
            if database_url_digest(url) != database_url:
                raise ConfigError(
                    "DATABASE_URL differs between the ingress and this recorder's process:"
                    " give every Ray process the same settings"
                )
        self.recorder: CallRecorder = CallRecorder(url, ray_call_metrics())

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

    async def actor_died(self, call_id: str, cause: str, at: float) -> None:
        await self.recorder.actor_died(call_id, cause, at)

    async def publish(self, event: dict[str, object]) -> None:
        await self.recorder.publish(event)

    async def last_seq(self) -> int:
        return await self.recorder.last_seq()

    async def poll(
        self, after: int, timeout_s: float = 15.0
    ) -> tuple[list[dict[str, object]], int]:
        return await self.recorder.poll(after, timeout_s)
