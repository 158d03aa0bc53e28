"""CallStore: calls, their timelines, transcripts and usage in SQLite or PostgreSQL.

Open one store per process (``await CallStore.open(settings.database_url)``),
share it between the calls that process serves, and ``close()`` it at
shutdown. Every method is one short transaction run on a worker thread (see
:mod:`switchboard.store.database` for why), except
:meth:`CallStore.grow_agent_turn`, which buffers (see
:mod:`switchboard.store.turns`). Events are written as they happen, so a call
actor that dies loses nothing already recorded, and a caller cancelled while
awaiting a write does not undo it. Errors are
:class:`~switchboard.errors.StoreError` (unknown call id, bad value, database
failure); a value it refuses, which sending again cannot help (a malformed id, a
value the database rejects), is the subclass
:class:`~switchboard.errors.StoreInputError`. :meth:`CallStore.open` raises
:class:`~switchboard.errors.ConfigError` for a URL it cannot use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import get_args

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from switchboard.errors import StoreError, StoreInputError
from switchboard.realtime_events import Usage
from switchboard.store import validation as check
from switchboard.store.database import Database, EngineOptions, create_engine
from switchboard.store.ids import is_call_id, new_call_id
from switchboard.store.migrations import upgrade
from switchboard.store.models import CallEventRow, CallRow, ReportProgressRow, TurnRow, UsageRow
from switchboard.store.pricing import GPT_REALTIME, PriceTable, estimate_cost
from switchboard.store.queries import (
    call_filters,
    check_call,
    encode_cursor,
    note_progress,
    page_query,
    require_call,
    to_record,
    to_turns,
)
from switchboard.store.records import (
    CallDetail,
    CallPage,
    CallRecord,
    Direction,
    NewCall,
    TimelineEvent,
)
from switchboard.store.status import STATUSES, StatusState, apply_status, is_terminal
from switchboard.store.turns import TurnWriter, close_replies, close_untranscribed

__all__ = ["CallStore"]

log = logging.getLogger("switchboard.store")

_USAGE_FIELDS = tuple(f.name for f in fields(Usage))
MAX_PAGE = 500


def _seen_status(
    session: Session, call_id: str, status: str, at: datetime, data: dict[str, object] | None
) -> bool:
    """Whether the call's timeline has this report already: Twilio's by its
    ``SequenceNumber`` (``sequence`` in its detail: one sent again is stamped when it
    arrives, so its time may differ), any other by ``status`` at ``at``."""
    sequence = None if data is None else data.get("sequence")
    query = select(CallEventRow.data).where(
        CallEventRow.call_id == call_id, CallEventRow.kind == "status"
    )
    if sequence is None:
        query = query.where(CallEventRow.at == at)
    return any(
        seen.get("status") == status and (sequence is None or _sequence(seen) == sequence)
        for seen in session.scalars(query)
    )


def _sequence(event: dict[str, object]) -> object:
    detail = event.get("detail")
    return detail.get("sequence") if isinstance(detail, dict) else None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CallStore:
    def __init__(
        self,
        database: Database,
        *,
        prices: PriceTable,
        flush_interval_s: float,
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Use :meth:`open`, which also brings the schema up to date."""
        self._db = database
        self._prices = prices
        self._now = now
        self._turns = TurnWriter(
            database, interval_s=flush_interval_s, now=now, monotonic=monotonic, sleep=sleep
        )
        self._closed = False

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for instrumentation (a benchmark counts commits)."""
        return self._db.engine

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        prices: PriceTable = GPT_REALTIME,
        options: EngineOptions | None = None,
        flush_interval_s: float = 0.25,
        now: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> CallStore:
        """Connect to ``url``, upgrade its schema to head, and return the store.

        ``flush_interval_s`` bounds how often an agent turn's text is written
        while it streams; ``now`` stamps creation times; the clocks and ``sleep`` (how
        a turn's next write waits, in ``monotonic``'s seconds) are for tests.
        """
        options = options or EngineOptions()
        database = Database(create_engine(url, options), options.threads)
        try:
            await database.run("migrating the call store", upgrade)
        except BaseException:
            await database.aclose()
            raise
        return cls(
            database,
            prices=prices,
            flush_interval_s=flush_interval_s,
            now=now,
            monotonic=monotonic,
            sleep=sleep,
        )

    async def close(self) -> None:
        """Write buffered transcript text and release the connections."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._turns.aclose()
        finally:
            await self._db.aclose()

    # -- calls -----------------------------------------------------------------

    async def create_call(self, call: NewCall) -> CallRecord:
        if call.direction not in get_args(Direction):
            raise StoreInputError(
                f"direction must be one of {', '.join(get_args(Direction))}, got {call.direction!r}"
            )
        if (
            call.max_duration_s is not None
            and check.count("max_duration_s", call.max_duration_s) == 0
        ):
            raise StoreInputError("max_duration_s must be positive")
        now = self._now()
        row = CallRow(
            id=new_call_id(now),
            direction=call.direction,
            to_number=check.short_text("to", call.to, 64),
            from_number=check.short_text("from_", call.from_, 64),
            instruction=check.storable(call.instruction),
            voice=None if call.voice is None else check.short_text("voice", call.voice, 64),
            greeting=None if call.greeting is None else check.storable(call.greeting),
            meta=check.json_object("metadata", call.metadata),
            max_duration_s=call.max_duration_s,
            twilio_sid=None
            if call.twilio_sid is None
            else check.short_text("twilio_sid", call.twilio_sid, 64),
            status="queued",
            created_at=now,
            updated_at=now,
        )
        await self._db.write("creating a call", lambda session: session.add(row))
        return to_record(row)

    async def set_twilio_sid(self, call_id: str, call_sid: str) -> None:
        check.short_text("call_sid", call_sid, 64)
        now = self._now()

        def work(session: Session) -> None:
            row = require_call(session, call_id, lock=True)
            row.twilio_sid, row.updated_at = call_sid, now

        await self._db.write("setting a call's Twilio sid", work, locking=True)

    async def find_by_twilio_sid(self, call_sid: str) -> CallRecord | None:
        def work(session: Session) -> CallRecord | None:
            query = select(CallRow).where(CallRow.twilio_sid == call_sid)
            row = session.execute(query).scalar_one_or_none()
            return None if row is None else to_record(row)

        return await self._db.read("finding a call by Twilio sid", work)

    async def update_status(
        self, call_id: str, status: str, at: datetime, detail: dict[str, object] | None = None
    ) -> bool:
        """Record a status callback; the status moves only forward (``status`` module).
        Whether it moved the call's status (False for a late or repeated one)."""
        at = check.aware("at", at)
        data = check.json_object("detail", detail)
        now = self._now()

        def work(session: Session) -> bool:
            row = require_call(session, call_id, lock=True)
            state = StatusState(row.status, row.answered_at, row.ended_at)
            new, applied = apply_status(state, status, at)
            if not applied and _seen_status(session, call_id, status, at, data):
                return False  # the same report again (a retry, a resent batch): noted once
            row.status, row.answered_at, row.ended_at = new.status, new.answered_at, new.ended_at
            row.updated_at = now
            if applied and is_terminal(new.status):
                close_untranscribed(session, call_id)
            event = {"status": status, "applied": applied} | ({"detail": data} if data else {})
            session.add(CallEventRow(call_id=call_id, kind="status", at=at, data=event))
            return applied

        applied = await self._db.write("updating a call's status", work, locking=True)
        if applied and is_terminal(status):
            # Apart, not under the call's row lock (turns.py): replies still playing are cut
            # provisionally, for no actor may be left to say how they ended.
            try:
                await self._db.write(
                    "cutting the replies a call's end left playing",
                    lambda session: close_replies(session, call_id),
                )
            except StoreError as exc:  # the status stands; the actor's report may still come
                log.warning("call %s: %s", call_id, exc)
        return applied

    async def append_event(
        self, call_id: str, kind: str, at: datetime, data: dict[str, object]
    ) -> None:
        """Add to the timeline: phase changes, interruptions, tool calls, problems, latency."""
        await self.append_events(call_id, [(kind, at, data)])

    async def append_events(
        self,
        call_id: str,
        events: Sequence[tuple[str, datetime, dict[str, object]]],
        progress: tuple[str, int] | None = None,
    ) -> None:
        """Add ``(kind, at, data)`` events to the timeline in one transaction; with
        ``progress`` (a sender, how many of its actions are then recorded), note that
        in it too (:meth:`actions_recorded`): the events and the note commit together.
        One bad event refuses them all (:class:`StoreInputError`): check each first with
        :func:`~switchboard.store.validation.timeline_event` to keep the others."""
        if progress is not None:
            check.short_text("sender", progress[0], 32)
            check.count("actions_recorded", progress[1])
        rows = [
            CallEventRow(call_id=call_id, kind=kind, at=at, data=data)
            for kind, at, data in (check.timeline_event(*event) for event in events)
        ]

        def work(session: Session) -> None:
            check_call(session, call_id)
            session.add_all(rows)
            if progress is not None:
                session.execute(note_progress(session, call_id, *progress))

        await self._db.write("appending call events", work)

    async def actions_recorded(self, call_id: str, sender: str) -> int:
        """How many of ``sender``'s actions for the call were recorded, as of the last
        timeline write that noted it (0 if none did)."""

        def work(session: Session) -> int:
            query = select(ReportProgressRow.actions_recorded).where(
                ReportProgressRow.call_id == call_id, ReportProgressRow.sender == sender
            )
            return session.scalar(query) or 0

        return await self._db.read("reading a call's recorded actions", work)

    async def finish_reason(self, call_id: str) -> str | None:
        """Why the call's media ended, as its first ``finished`` event says (None: not yet)."""

        def work(session: Session) -> str | None:
            query = (
                select(CallEventRow.data)
                .where(CallEventRow.call_id == call_id, CallEventRow.kind == "finished")
                .order_by(CallEventRow.id)
                .limit(1)
            )
            data = session.scalar(query)
            return None if data is None else str(data.get("reason", ""))

        return await self._db.read("reading how a call ended", work)

    async def last_event(self, call_id: str) -> tuple[datetime, int] | None:
        """When the newest event on the call's timeline happened, and the id of the event
        written last (it grows with every event, whatever its time); None: it has none."""

        def work(session: Session) -> tuple[datetime, int] | None:
            query = select(func.max(CallEventRow.at), func.max(CallEventRow.id)).where(
                CallEventRow.call_id == call_id
            )
            # max() keeps the column's type: aware UTC on every backend, as the column reads
            newest, last_id = session.execute(query).one()
            return None if newest is None else (newest, int(last_id))

        return await self._db.read("reading a call's last event", work)

    # -- transcript ------------------------------------------------------------

    async def reserve_caller_turn(
        self, call_id: str, item_id: str, at: datetime, previous_item_id: str | None = None
    ) -> None:
        """Hold the caller turn's place at ``speech_started``; its text comes later."""
        check.short_text("item_id", item_id, 64)
        await self._turns.reserve_caller(call_id, item_id, check.aware("at", at), previous_item_id)

    async def record_caller_turn(self, call_id: str, item_id: str, text: str, at: datetime) -> None:
        check.short_text("item_id", item_id, 64)
        await self._turns.record_caller(
            call_id, item_id, check.storable(text), check.aware("at", at)
        )

    async def start_agent_turn(
        self, call_id: str, item_id: str, at: datetime, previous_item_id: str | None = None
    ) -> None:
        check.short_text("item_id", item_id, 64)
        await self._turns.start_agent(call_id, item_id, check.aware("at", at), previous_item_id)

    async def grow_agent_turn(
        self, call_id: str, item_id: str, delta: str, offset: int | None = None
    ) -> None:
        """Buffer a transcript delta (at ``offset`` of the text, if given: a delta sent
        again is not added twice); written within ``flush_interval_s``."""
        check.short_text("item_id", item_id, 64)
        await self._turns.grow_agent(call_id, item_id, check.storable(delta), offset)

    async def finish_agent_turn(
        self, call_id: str, item_id: str, transcript: str, at: datetime
    ) -> None:
        """Write the turn's final transcript; it ended at ``at`` unless it was cut or
        finished before (a finish sent again moves nothing). On disk when this returns."""
        check.short_text("item_id", item_id, 64)
        await self._turns.finish_agent(
            call_id, item_id, check.storable(transcript), check.aware("at", at)
        )

    async def cut_agent_turn(
        self, call_id: str, item_id: str, heard_ms: int, generated_ms: int, at: datetime
    ) -> None:
        """The caller interrupted at ``at``: keep the generated text and estimate what
        was heard (the first cut stands)."""
        check.short_text("item_id", item_id, 64)
        check.count("heard_ms", heard_ms)
        check.count("generated_ms", generated_ms)
        await self._turns.cut_agent(call_id, item_id, heard_ms, generated_ms, check.aware("at", at))

    async def close_caller_turns(self, call_id: str, at: datetime | None = None) -> None:
        """The call's media ended (at ``at``; None: when its status says, else now):
        reserved caller turns with no transcript become ``untranscribed`` and replies
        still speaking are cut (a terminal status does this too)."""
        await self._turns.close_caller(call_id, None if at is None else check.aware("at", at))

    async def flush(self) -> None:
        """Write buffered agent transcript text now."""
        await self._turns.flush()

    async def settle(self) -> None:
        """Wait for the background transcript writes scheduled so far."""
        await self._turns.settle()

    async def flush_turns(self, call_id: str, item_ids: Iterable[str] | None = None) -> None:
        """Write the buffered text of these agent turns of ``call_id`` (None: all) now."""
        await self._turns.flush_call(call_id, item_ids)

    # -- usage -----------------------------------------------------------------

    async def add_usage(self, call_id: str, response_id: str, usage: Usage) -> None:
        """Count one response's tokens; a repeated ``response_id`` is counted once."""
        check.short_text("response_id", response_id, 64)
        counts = {name: check.count(name, getattr(usage, name)) for name in _USAGE_FIELDS}

        def work(session: Session) -> None:
            check_call(session, call_id)
            seen = session.execute(
                select(UsageRow.id).where(
                    UsageRow.call_id == call_id, UsageRow.response_id == response_id
                )
            )
            if seen.first() is None:
                session.add(UsageRow(call_id=call_id, response_id=response_id, **counts))

        await self._db.write("adding usage", work)

    # -- reading ---------------------------------------------------------------

    async def get_call(self, call_id: str) -> CallDetail | None:
        if not is_call_id(call_id):
            return None
        live = self._turns.live_text(call_id)

        def work(session: Session) -> CallDetail | None:
            row = session.get(CallRow, call_id)
            if row is None:
                return None
            events = session.scalars(
                select(CallEventRow)
                .where(CallEventRow.call_id == call_id)
                .order_by(CallEventRow.at, CallEventRow.id)
            )
            turns = session.scalars(select(TurnRow).where(TurnRow.call_id == call_id)).all()
            totals = (func.coalesce(func.sum(getattr(UsageRow, name)), 0) for name in _USAGE_FIELDS)
            sums = session.execute(select(*totals).where(UsageRow.call_id == call_id)).one()
            usage = Usage(**{k: int(v) for k, v in zip(_USAGE_FIELDS, sums, strict=True)})
            return CallDetail(
                call=to_record(row),
                timeline=tuple(TimelineEvent(e.kind, e.at, e.data) for e in events),
                transcript=to_turns(turns, live),
                usage=usage,
                cost_usd=estimate_cost(usage, self._prices),
            )

        return await self._db.read("reading a call", work)

    async def list_calls(
        self,
        *,
        status: str | None = None,
        direction: str | None = None,
        to: str | None = None,
        search: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> CallPage:
        """Calls newest first, filtered; pass ``next_cursor`` back for the next page.

        ``search`` matches, case-insensitively, part of the to/from number, the
        instruction or any transcript text; ``created_after`` is inclusive,
        ``created_before`` exclusive.
        """
        if not 1 <= check.count("limit", limit) <= MAX_PAGE:
            raise StoreInputError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if status is not None and status not in STATUSES:
            raise StoreInputError(f"unknown call status {status!r}")
        after = None if created_after is None else check.aware("created_after", created_after)
        before = None if created_before is None else check.aware("created_before", created_before)
        clauses = call_filters(
            status=status,
            direction=direction,
            to=None if to is None else check.storable(to),
            search=None if search is None else check.storable(search),
            created_after=after,
            created_before=before,
        )
        query = page_query(clauses, cursor, limit)

        def work(session: Session) -> CallPage:
            rows = session.scalars(query).all()
            page, more = rows[:limit], len(rows) > limit
            return CallPage(
                calls=tuple(to_record(r) for r in page),
                next_cursor=encode_cursor(page[-1]) if more else None,
            )

        return await self._db.read("listing calls", work)
