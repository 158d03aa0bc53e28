"""Writing transcript turns: caller turns reserved then filled, agent turns streamed.

A caller turn is reserved at ``speech_started`` (its place in the
conversation) and filled when its transcript arrives; an unreserved transcript
creates the turn. An agent turn is written when it starts; its deltas collect
in a :class:`~switchboard.store.buffer.TranscriptBuffer` and are written at
most every ``interval_s`` (a background task writes text left waiting), and
always, synchronously, when the turn finishes or is cut. So a finished turn is
on disk when ``finish_agent`` returns; a crash mid-turn loses at most the
deltas of its last ``interval_s``.

A cut turn keeps everything generated until the cut in ``text`` and the
estimate of what the caller heard in ``heard_text``
(:func:`~switchboard.transcript.heard_prefix`); deltas that trickle in
after the cut are dropped (their audio was never played), and a final
transcript reported after the cut replaces ``text`` but not ``heard_text``.

A call that ends (the recorder writes its end, or a terminal status is
written) with a reply still ``speaking`` (its actor died mid-reply, or its
last reports were lost: no cut may come) closes it as ``interrupted`` with
``heard_text`` empty and ``heard_ms`` / ``generated_ms`` unknown (NULL): how
much of it was played is not known here, and counting the whole as heard would
claim what the caller may never have heard. Such a cut is provisional: a
measured cut reported after it replaces it, as does a finish that happened
before it (Twilio's final status recorded before the actor's last report),
and text still buffered for it is written. A terminal status cuts in a
transaction of its own, after the status's: under the call's row lock it
would also hold agent-turn locks, which the recorder's group takes in another
order (a deadlock on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from switchboard.errors import StoreError, StoreInputError
from switchboard.store.buffer import TranscriptBuffer, TurnKey
from switchboard.store.database import Database
from switchboard.store.models import CallRow, TurnRow
from switchboard.store.queries import check_call
from switchboard.transcript import heard_prefix

__all__ = ["TurnWriter", "close_replies", "close_untranscribed"]

log = logging.getLogger("switchboard.store")


class TurnWriter:
    def __init__(
        self,
        database: Database,
        *,
        interval_s: float,
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = database
        self._now = now
        self._monotonic = monotonic
        self._sleep = sleep
        self._buffer = TranscriptBuffer(interval_s)
        self._locks: dict[TurnKey, asyncio.Lock] = {}
        self._opening = asyncio.Lock()
        self._sleeping: dict[TurnKey, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- caller turns ----------------------------------------------------------

    async def reserve_caller(
        self, call_id: str, item_id: str, at: datetime, previous_item_id: str | None
    ) -> None:
        def work(session: Session) -> None:
            if _turn(session, call_id, item_id, "caller") is not None:
                return  # the place is already taken
            check_call(session, call_id)
            session.add(
                TurnRow(
                    call_id=call_id,
                    item_id=item_id,
                    role="caller",
                    state="pending",
                    started_at=at,
                    previous_item_id=previous_item_id,
                )
            )

        await self._db.write("reserving a caller turn", work)

    async def record_caller(self, call_id: str, item_id: str, text: str, at: datetime) -> None:
        def work(session: Session) -> None:
            row = _turn(session, call_id, item_id, "caller")
            if row is None:
                check_call(session, call_id)
                row = TurnRow(call_id=call_id, item_id=item_id, role="caller", started_at=at)
                session.add(row)
            row.text, row.state, row.ended_at = text, "transcribed", at

        await self._db.write("recording a caller turn", work)

    async def close_caller(self, call_id: str, at: datetime | None = None) -> None:
        """The call ended (at ``at``; None: the end its status gave, else now): its reserved
        caller turns will get no transcript, and its replies still speaking are cut
        (module docstring). They are no longer buffered here either."""
        keys = [(call_id, item_id) for item_id in self._buffer.texts_of(call_id)]
        so_far = {key[1]: text for key in keys if (text := await self._untrack(key)) is not None}

        def work(session: Session) -> None:
            close_untranscribed(session, call_id)
            close_replies(session, call_id, at or _ended_at(session, call_id) or self._now())
            for item_id, text in so_far.items():  # newer than what was written
                session.execute(
                    update(TurnRow)
                    .where(TurnRow.call_id == call_id, TurnRow.item_id == item_id, _cut_unmeasured)
                    .values(text=text)
                )

        try:
            await self._db.write("closing an ended call's turns", work)
        except BaseException:
            for item_id, text in so_far.items():  # closed again when tried again
                self._track((call_id, item_id), text)
            raise

    # -- agent turns -----------------------------------------------------------

    async def start_agent(
        self, call_id: str, item_id: str, at: datetime, previous_item_id: str | None
    ) -> None:
        def work(session: Session) -> bool:
            if _turn(session, call_id, item_id, "agent") is not None:
                return False  # a repeated start; a later delta reopens it if needed
            check_call(session, call_id)
            session.add(
                TurnRow(
                    call_id=call_id,
                    item_id=item_id,
                    role="agent",
                    state="speaking",
                    text="",
                    started_at=at,
                    previous_item_id=previous_item_id,
                )
            )
            return True

        if await self._db.write("starting an agent turn", work):
            self._track((call_id, item_id), "")

    async def grow_agent(
        self, call_id: str, item_id: str, delta: str, offset: int | None = None
    ) -> None:
        key = (call_id, item_id)
        if not self._buffer.is_open(key) and (
            self._buffer.was_closed(key) or not await self._reopen(key)
        ):
            return  # finished or cut: late deltas of a cut reply were never played
        if self._buffer.grow(key, delta, self._monotonic(), offset):
            await self._write_waiting(key)
        else:
            self._schedule(key)

    async def finish_agent(self, call_id: str, item_id: str, transcript: str, at: datetime) -> None:
        key = (call_id, item_id)
        so_far = await self._untrack(key)

        def work(session: Session) -> None:
            row = self._agent_row(session, key, so_far, at)
            row.text = transcript or so_far or row.text or ""
            # Once only: a finish sent again keeps the first end, and what was heard of
            # a cut reply stays as cut; but one that happened before the call's end
            # replaces the end's unmeasured cut (its report lost the race to the end's).
            before_end = row.ended_at is not None and at <= row.ended_at
            if row.state == "speaking" or (_unmeasured(row) and before_end):
                row.state, row.ended_at, row.heard_text = "finished", at, None

        await self._db.write("finishing an agent turn", work)

    async def cut_agent(
        self, call_id: str, item_id: str, heard_ms: int, generated_ms: int, at: datetime
    ) -> None:
        key = (call_id, item_id)
        so_far = await self._untrack(key)

        def work(session: Session) -> None:
            row = self._agent_row(session, key, so_far, at)
            if row.state == "interrupted" and row.heard_ms is not None:
                return  # the first measured cut stands (the call's end measures none)
            text = so_far if so_far is not None else (row.text or "")
            row.text, row.state, row.ended_at = text, "interrupted", at
            row.heard_ms, row.generated_ms = heard_ms, generated_ms
            row.heard_text = heard_prefix(text, heard_ms, generated_ms)

        try:
            await self._db.write("cutting an agent turn", work)
        except BaseException:
            if so_far is not None:  # the cut is tried again: with the text it had, not less
                self._track(key, so_far)
            raise

    # -- buffered text ---------------------------------------------------------

    def live_text(self, call_id: str) -> dict[str, str]:
        """Text of this call's agent turns in progress, including what is not written yet."""
        return self._buffer.texts_of(call_id)

    async def flush(self) -> None:
        """Write every turn's waiting text now."""
        for key in self._buffer.unwritten():
            await self._write_waiting(key)

    async def flush_call(self, call_id: str, item_ids: Iterable[str] | None = None) -> None:
        """Write the waiting text of these turns of one call (None: all of them) now."""
        if item_ids is None:
            item_ids = list(self._buffer.texts_of(call_id))
        for item_id in dict.fromkeys(item_ids):
            await self._write_waiting((call_id, item_id))

    async def settle(self) -> None:
        """Wait until the background writes scheduled so far have run."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def aclose(self) -> None:
        for task in self._sleeping.values():
            task.cancel()
        await self.settle()
        await self.flush()

    def _track(self, key: TurnKey, text: str) -> None:
        self._buffer.open(key, text, self._monotonic())
        self._locks[key] = asyncio.Lock()

    async def _untrack(self, key: TurnKey) -> str | None:
        """Stop buffering ``key``; return its text if it was buffered."""
        sleeping = self._sleeping.pop(key, None)
        if sleeping is not None:
            sleeping.cancel()  # still asleep: it had not begun to write
        lock = self._locks.pop(key, None)
        if lock is None:
            return self._buffer.close(key)
        async with lock:  # let a write in flight land first
            return self._buffer.close(key)

    async def _reopen(self, key: TurnKey) -> bool:
        """Buffer a turn this process did not start (restart, missed start); False if done."""
        call_id, item_id = key
        started = self._now()

        def work(session: Session) -> tuple[str, str]:
            row = _turn(session, call_id, item_id, "agent")
            if row is None:
                check_call(session, call_id)
                row = TurnRow(
                    call_id=call_id,
                    item_id=item_id,
                    role="agent",
                    state="speaking",
                    text="",
                    started_at=started,
                )
                session.add(row)
            return row.state, row.text or ""

        async with self._opening:
            if self._buffer.is_open(key) or self._buffer.was_closed(key):
                return self._buffer.is_open(key)
            state, text = await self._db.write("reopening an agent turn", work)
            if state != "speaking":
                self._buffer.close(key)
                return False
            self._track(key, text)
            return True

    @staticmethod
    def _agent_row(session: Session, key: TurnKey, text: str | None, at: datetime) -> TurnRow:
        call_id, item_id = key
        row = _turn(session, call_id, item_id, "agent")
        if row is None:  # finished or cut without a start: keep the text anyway
            check_call(session, call_id)
            row = TurnRow(
                call_id=call_id,
                item_id=item_id,
                role="agent",
                state="speaking",
                text=text or "",
                started_at=at,
            )
            session.add(row)
        return row

    async def _write_waiting(self, key: TurnKey) -> None:
        lock = self._locks.get(key)
        if lock is None:
            return
        call_id, item_id = key
        async with lock:
            text = self._buffer.text(key)
            if text is None or self._buffer.deadline(key) is None:
                return  # closed meanwhile, or nothing new

            def work(session: Session) -> None:
                # Only while speaking (or cut unmeasured, by a status callback, say): never
                # overwrite a turn another store finished or cut.
                session.execute(
                    update(TurnRow)
                    .where(
                        TurnRow.call_id == call_id,
                        TurnRow.item_id == item_id,
                        or_(TurnRow.state == "speaking", _cut_unmeasured),
                    )
                    .values(text=text)
                )

            await self._db.write("writing an agent transcript", work)
            self._buffer.written(key, text, self._monotonic())

    def _schedule(self, key: TurnKey) -> None:
        deadline = self._buffer.deadline(key)
        if deadline is None or key in self._sleeping:
            return
        task = asyncio.create_task(self._write_later(key, deadline - self._monotonic()))
        self._sleeping[key] = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_later(self, key: TurnKey, delay: float) -> None:
        await self._sleep(max(0.0, delay))
        self._sleeping.pop(key, None)
        try:
            await self._write_waiting(key)
        except StoreError as exc:
            # The text stays buffered: the next delta, finish or cut writes it.
            log.warning("call %s: writing agent turn %s failed: %s", key[0], key[1], exc)
            return
        self._schedule(key)  # deltas that came in during the write


def _turn(session: Session, call_id: str, item_id: str, role: str) -> TurnRow | None:
    query = select(TurnRow).where(TurnRow.call_id == call_id, TurnRow.item_id == item_id)
    row = session.execute(query).scalar_one_or_none()
    if row is not None and row.role != role:
        raise StoreInputError(
            f"item {item_id!r} of call {call_id!r} is a {row.role} turn, not {role}"
        )
    return row


def close_untranscribed(session: Session, call_id: str) -> None:
    """``pending`` caller turns of an ended call become ``untranscribed``: no transcript
    comes once the model's socket is closed. One that still arrives (a report sent
    late) fills the turn as ever."""
    session.execute(
        update(TurnRow)
        .where(TurnRow.call_id == call_id, TurnRow.role == "caller", TurnRow.state == "pending")
        .values(state="untranscribed")
    )


def close_replies(session: Session, call_id: str, ended: datetime | None = None) -> None:
    """Agent turns still ``speaking`` when the call ended (at ``ended``; None: the end its
    row gives) are cut, nothing known heard: provisionally (module docstring)."""
    ended = ended or _ended_at(session, call_id)
    session.execute(
        update(TurnRow)
        .where(TurnRow.call_id == call_id, TurnRow.role == "agent", TurnRow.state == "speaking")
        .values(state="interrupted", ended_at=ended, heard_text="")
    )


# An agent turn closed by its call's end, not by a cut: nothing is known of what was heard.
_cut_unmeasured: ColumnElement[bool] = and_(
    TurnRow.state == "interrupted", TurnRow.heard_ms.is_(None)
)


def _unmeasured(row: TurnRow) -> bool:
    return row.state == "interrupted" and row.heard_ms is None


def _ended_at(session: Session, call_id: str) -> datetime | None:
    return session.scalar(select(CallRow.ended_at).where(CallRow.id == call_id))
