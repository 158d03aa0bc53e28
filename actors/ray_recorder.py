"""The recorder as a Ray actor, in a module of its own.

Ray imports the module that defines an actor class in every process that
runs it. Kept apart from ``actors.ray_wiring``, the recorder's store
(SQLAlchemy, Alembic, the database drivers: ~29 MB) is imported only by the
recorder's process, never by the call actors.
"""

from __future__ import annotations

import ray

from actors.ray_metrics import ray_call_metrics
from actors.recorder import CallRecorder

__all__ = ["RayCallRecorder"]


@ray.remote
class RayCallRecorder(CallRecorder):
    def __init__(self, database_url: str) -> None:
        super().__init__(database_url, ray_call_metrics())
