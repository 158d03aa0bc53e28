"""Queries shared by the store's methods, and rows turned into records.

Listing is keyset-paginated, newest first, on ``(created_at, id)``: the cursor
is the last call of a page, so a page costs one index range scan however deep
it is, and calls created meanwhile never shift later pages.
"""

from __future__ import annotations

import binascii
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import ColumnElement, Insert, Select, and_, exists, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from switchboard.errors import StoreError, StoreInputError
from switchboard.store.ids import is_call_id
from switchboard.store.models import CallRow, ReportProgressRow, TurnRow
from switchboard.store.records import CallRecord, Direction, Turn
from switchboard.transcript import Placed, order_turns

__all__ = [
    "call_filters",
    "check_call",
    "decode_cursor",
    "encode_cursor",
    "note_progress",
    "page_query",
    "require_call",
    "to_record",
    "to_turns",
]


def require_call(session: Session, call_id: str, *, lock: bool = False) -> CallRow:
    """The call's row, locked for update if asked; :class:`StoreError` if there is none.
    A write that locks it passes ``locking=True`` to ``Database.write``: on PostgreSQL a
    group holding such locks for many calls deadlocks with another process's group."""
    query = select(CallRow).where(CallRow.id == call_id)
    if lock:
        # FOR NO KEY UPDATE: the key never changes, and a plain FOR UPDATE would conflict
        # with the KEY SHARE lock every insert of a child row (an event) takes on it: two
        # writers taking both in different orders deadlocked (PostgreSQL). SQLite ignores
        # it: BEGIN IMMEDIATE already holds.
        query = query.with_for_update(key_share=True)
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise StoreError(f"unknown call id {call_id!r}")
    return row


def check_call(session: Session, call_id: str) -> None:
    """:class:`StoreError` if there is no such call (reads its id only, not the row)."""
    if session.scalar(select(CallRow.id).where(CallRow.id == call_id)) is None:
        raise StoreError(f"unknown call id {call_id!r}")


def to_record(row: CallRow) -> CallRecord:
    return CallRecord(
        id=row.id,
        direction=cast(Direction, row.direction),
        to=row.to_number,
        from_=row.from_number,
        instruction=row.instruction,
        voice=row.voice,
        greeting=row.greeting,
        metadata=row.meta,
        max_duration_s=row.max_duration_s,
        status=row.status,
        twilio_sid=row.twilio_sid,
        created_at=row.created_at,
        updated_at=row.updated_at,
        answered_at=row.answered_at,
        ended_at=row.ended_at,
    )


def to_turns(rows: Sequence[TurnRow], live_text: dict[str, str]) -> tuple[Turn, ...]:
    """Turns in conversation order; ``live_text`` overrides text not yet written."""
    ordered = order_turns(rows, lambda r: Placed(r.item_id, r.id, r.previous_item_id))
    return tuple(
        Turn(
            item_id=r.item_id,
            role="caller" if r.role == "caller" else "agent",
            state=r.state,
            text=live_text.get(r.item_id, r.text),
            started_at=r.started_at,
            ended_at=r.ended_at,
            previous_item_id=r.previous_item_id,
            heard_text=r.heard_text,
            heard_ms=r.heard_ms,
            generated_ms=r.generated_ms,
        )
        for r in ordered
    )


def encode_cursor(row: CallRow) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, call_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is not None:
            created_at.astimezone(UTC)  # one near year 1 or 9999 may not be in UTC's range
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise StoreInputError(f"invalid list cursor {cursor!r}") from exc
    if created_at.tzinfo is None or not is_call_id(call_id):
        raise StoreInputError(f"invalid list cursor {cursor!r}")
    return created_at, call_id


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def call_filters(
    *,
    status: str | None,
    direction: str | None,
    to: str | None,
    search: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> list[ColumnElement[bool]]:
    """WHERE clauses for :meth:`CallStore.list_calls`; times already checked aware."""
    clauses: list[ColumnElement[bool]] = []
    if status is not None:
        clauses.append(CallRow.status == status)
    if direction is not None:
        clauses.append(CallRow.direction == direction)
    if to is not None:
        clauses.append(CallRow.to_number == to)
    if created_after is not None:
        clauses.append(CallRow.created_at >= created_after)
    if created_before is not None:
        clauses.append(CallRow.created_at < created_before)
    if search:
        pattern = _like(search)
        spoken = exists().where(
            TurnRow.call_id == CallRow.id, TurnRow.text.ilike(pattern, escape="\\")
        )
        clauses.append(
            or_(
                CallRow.to_number.ilike(pattern, escape="\\"),
                CallRow.from_number.ilike(pattern, escape="\\"),
                CallRow.instruction.ilike(pattern, escape="\\"),
                spoken,
            )
        )
    return clauses


def page_query(
    clauses: list[ColumnElement[bool]], cursor: str | None, limit: int
) -> Select[CallRow]:
    """Newest first, after ``cursor``; one row more than ``limit`` to tell if a page follows."""
    if cursor is not None:
        created_at, call_id = decode_cursor(cursor)
        clauses = [
            *clauses,
            or_(
                CallRow.created_at < created_at,
                and_(CallRow.created_at == created_at, CallRow.id < call_id),
            ),
        ]
    return (
        select(CallRow)
        .where(*clauses)
        .order_by(CallRow.created_at.desc(), CallRow.id.desc())
        .limit(limit + 1)
    )


def note_progress(session: Session, call_id: str, sender: str, recorded: int) -> Insert:
    """An upsert of ``sender``'s recorded actions for the call, never lowering them: one
    statement (one round trip, no race between two first inserts)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = pg_insert if postgres else sqlite_insert
    new = insert(ReportProgressRow).values(
        call_id=call_id, sender=sender, actions_recorded=recorded
    )
    higher = (func.greatest if postgres else func.max)(
        ReportProgressRow.actions_recorded, new.excluded.actions_recorded
    )
    return new.on_conflict_do_update(
        index_elements=[ReportProgressRow.call_id, ReportProgressRow.sender],
        set_={"actions_recorded": higher},
    )
