"""Switchboard's persistence: calls, timelines, transcripts and usage.

``await CallStore.open(url)`` with ``sqlite:///file.db`` (embedded, WAL) or a
PostgreSQL URL (``DATABASE_URL``); the schema is migrated to head on open.
:func:`record` and :func:`record_batch` write the call policy's notices. See
``repository`` for the API, ``switchboard.transcript`` for turn ordering and the
heard-text estimate, ``pricing`` for the cost estimate.
"""

from __future__ import annotations

from switchboard.store.database import EngineOptions
from switchboard.store.migrations import upgrade_to_head
from switchboard.store.pricing import GPT_REALTIME, PRICES, PriceTable, estimate_cost
from switchboard.store.recorder import record, record_batch
from switchboard.store.records import (
    CallDetail,
    CallPage,
    CallRecord,
    NewCall,
    TimelineEvent,
    Turn,
)
from switchboard.store.repository import CallStore

__all__ = [
    "GPT_REALTIME",
    "PRICES",
    "CallDetail",
    "CallPage",
    "CallRecord",
    "CallStore",
    "EngineOptions",
    "NewCall",
    "PriceTable",
    "TimelineEvent",
    "Turn",
    "estimate_cost",
    "record",
    "record_batch",
    "upgrade_to_head",
]
