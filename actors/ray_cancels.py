"""Hang-ups of calls whose actor was still being started, kept in Ray's GCS.

``CallPool.cancel`` keeps such a hang-up in the pool's memory. A pool that dies and
is started again by Ray before that actor is up would forget it, and the placing
ingress, asking the new pool again, would get an actor and dial a call its caller
had hung up. So the pool actor also writes each one to the GCS key-value store
(one key per call, the time as its value), a new pool reads them before it hands
out an actor or takes a cancel, and the key goes once the placing has been
refused. A key whose placing never asks again (its ingress died too) is dropped
by a later pool's read after ``KEEP_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ray.experimental import internal_kv

__all__ = ["KEEP_S", "KvCancels"]

PREFIX = "canceled:"
# Longer than any placing waits for its actor (CallPool's create_timeout_s, 60 s) plus
# the ingress's waits for a pool that is being restarted.
KEEP_S = 600.0


class KvCancels:
    """The GCS key-value store's record of canceled placings, in ``namespace``."""

    def __init__(self, namespace: str, clock: Callable[[], float] = time.time) -> None:
        self._namespace = namespace
        self._clock = clock  # the wall clock: the keys outlive the process that wrote them

    async def note(self, call_id: str) -> None:
        # Off the event loop: each is a round trip to the GCS.
        await asyncio.to_thread(
            internal_kv._internal_kv_put,
            PREFIX + call_id,
            repr(self._clock()),
            overwrite=True,
            namespace=self._namespace,
        )

    async def forget(self, call_id: str) -> None:
        await asyncio.to_thread(
            internal_kv._internal_kv_del, PREFIX + call_id, namespace=self._namespace
        )

    async def recent(self) -> set[str]:
        """The calls canceled within ``KEEP_S``; older keys are deleted."""
        return await asyncio.to_thread(self._recent)

    def _recent(self) -> set[str]:
        found: set[str] = set()
        now = self._clock()
        for key in internal_kv._internal_kv_list(PREFIX, namespace=self._namespace):
            value = internal_kv._internal_kv_get(key, namespace=self._namespace)
            if value is None:  # deleted since it was listed
                continue
            try:
                at = float(value)
            except ValueError:  # no time: nothing to keep it for
                at = 0.0
            if now - at > KEEP_S:
                internal_kv._internal_kv_del(key, namespace=self._namespace)
            else:
                found.add(key.decode()[len(PREFIX) :])
        return found
