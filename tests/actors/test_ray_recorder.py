"""The recorder's Ray actor class stays cheap to load.

Ray imports an actor class's module in every process holding a handle to it:
each call actor's ``ray.get_actor(recorder_name(shard))`` loads ``actors.ray_recorder``.
Were the store imported there, every call actor would carry it (~28 MB).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from actors.ray_recorder import RayCallRecorder
from actors.recorder import CallRecorder

STORE_MODULES = ("sqlalchemy", "alembic", "switchboard.store", "actors.recorder")


def test_loading_the_recorder_class_does_not_import_the_store() -> None:
    code = (
        "import sys, actors.ray_recorder; "
        f"print(' '.join(m for m in {STORE_MODULES!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],  # the repository, as Ray's workers see it
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert loaded.stdout.strip() == ""


def test_the_actor_offers_every_method_of_the_recorder() -> None:
    def methods(cls: type) -> dict[str, inspect.Signature]:
        found = {}
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction):
            if not name.startswith("_"):
                signature = inspect.signature(member)
                # Ray's tracing adds a keyword of its own to every actor method.
                own = [p for p in signature.parameters.values() if p.name != "_ray_trace_ctx"]
                found[name] = signature.replace(parameters=own)
        return found

    assert methods(RayCallRecorder.__ray_actor_class__) == methods(CallRecorder)  # type: ignore[attr-defined]
