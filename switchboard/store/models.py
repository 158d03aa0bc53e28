"""The call store's tables, as SQLAlchemy 2 typed declarative models.

Five tables, every child row deleted with its call:

- ``calls``: one row per call; status and its derived times are kept on the
  row (see :mod:`switchboard.store.status`) so listing never scans timelines.
- ``call_events``: the timeline, append-only (status callbacks, phase
  changes, interruptions, tool calls, problems, latency marks).
- ``turns``: the transcript; ``id`` is the arrival rank used by
  :func:`~switchboard.transcript.order_turns`.
- ``usage``: one row per Realtime response (``response.done``), unique per
  call, so a replayed ``response.done`` is not counted twice.
- ``report_progress``: how much of each call actor's reports the recorder has
  recorded, so a report sent again is recorded once.

The schema is created and changed only by the Alembic migrations in
``switchboard/store/migrations``; a test checks that they match these models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "CallEventRow",
    "CallRow",
    "ReportProgressRow",
    "TurnRow",
    "UTCDateTime",
    "UsageRow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zones: values are stored as naive UTC text, which also
    keeps their string order equal to their time order for keyset pagination.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_JSON = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid).
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")


# Named constraints, so later migrations (batch mode on SQLite) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, object]: _JSON,
    }


class CallRow(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))
    to_number: Mapped[str] = mapped_column(String(64), index=True)
    from_number: Mapped[str] = mapped_column(String(64))
    instruction: Mapped[str] = mapped_column(Text)
    voice: Mapped[str | None] = mapped_column(String(64))
    greeting: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, object]] = mapped_column("metadata")
    max_duration_s: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    twilio_sid: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]

    __table_args__ = (
        Index(None, "created_at", "id"),
        # Unique as a partial index, not a constraint: PostgreSQL takes FOR UPDATE for an
        # UPDATE of a column with a unique index a foreign key could use (a "key" update),
        # which waits for the KEY SHARE lock of every child row inserted meanwhile (an event)
        # and deadlocked setting the sid against the recorder. A partial index is no key;
        # NULLs were distinct anyway.
        Index(
            None,
            "twilio_sid",
            unique=True,
            postgresql_where=text("twilio_sid IS NOT NULL"),
            sqlite_where=text("twilio_sid IS NOT NULL"),
        ),
    )


class CallEventRow(Base):
    __tablename__ = "call_events"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    data: Mapped[dict[str, object]]

    __table_args__ = (Index(None, "call_id", "at", "id"),)


class TurnRow(Base):
    __tablename__ = "turns"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    heard_text: Mapped[str | None] = mapped_column(Text)
    heard_ms: Mapped[int | None] = mapped_column(Integer)
    generated_ms: Mapped[int | None] = mapped_column(Integer)
    previous_item_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("call_id", "item_id"),)


class UsageRow(Base):
    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    response_id: Mapped[str] = mapped_column(String(64))
    total_tokens: Mapped[int]
    input_tokens: Mapped[int]
    output_tokens: Mapped[int]
    input_audio_tokens: Mapped[int]
    input_text_tokens: Mapped[int]
    input_cached_tokens: Mapped[int]
    output_audio_tokens: Mapped[int]
    output_text_tokens: Mapped[int]

    __table_args__ = (UniqueConstraint("call_id", "response_id"),)


class ReportProgressRow(Base):
    """How many of a call actor's reported actions are recorded, as of the last batch
    that wrote to the timeline: a batch sent again skips them (``actors/recorder.py``).
    Keyed by the sender too (a call actor, for one call): a second actor serving the
    call numbers from 0. Only the call's recorder writes it, never the ``calls`` row,
    whose locks the ingress takes too."""

    __tablename__ = "report_progress"

    call_id: Mapped[str] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    sender: Mapped[str] = mapped_column(String(32), primary_key=True)
    actions_recorded: Mapped[int] = mapped_column(BigInteger)
