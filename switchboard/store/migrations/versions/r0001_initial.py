"""Calls, their timeline, transcript turns and token usage.

Revision ID: 0001
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types as they were at this revision (never import models here).
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("to_number", sa.String(64), nullable=False),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("voice", sa.String(64), nullable=True),
        sa.Column("greeting", sa.Text(), nullable=True),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("max_duration_s", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("twilio_sid", sa.String(64), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.Column("answered_at", _TIME, nullable=True),
        sa.Column("ended_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.UniqueConstraint("twilio_sid", name="uq_calls_twilio_sid"),
    )
    op.create_index("ix_calls_to_number", "calls", ["to_number"])
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_created_at_id", "calls", ["created_at", "id"])

    op.create_table(
        "call_events",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(26), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_events"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_events_call_id_calls", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_call_events_call_id_at_id", "call_events", ["call_id", "at", "id"])

    op.create_table(
        "turns",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(26), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("heard_text", sa.Text(), nullable=True),
        sa.Column("heard_ms", sa.Integer(), nullable=True),
        sa.Column("generated_ms", sa.Integer(), nullable=True),
        sa.Column("previous_item_id", sa.String(64), nullable=True),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("ended_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_turns"),
        sa.UniqueConstraint("call_id", "item_id", name="uq_turns_call_id_item_id"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_turns_call_id_calls", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "usage",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(26), nullable=False),
        sa.Column("response_id", sa.String(64), nullable=False),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in (
                "total_tokens",
                "input_tokens",
                "output_tokens",
                "input_audio_tokens",
                "input_text_tokens",
                "input_cached_tokens",
                "output_audio_tokens",
                "output_text_tokens",
            )
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage"),
        sa.UniqueConstraint("call_id", "response_id", name="uq_usage_call_id_response_id"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_usage_call_id_calls", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    for table in ("usage", "turns", "call_events", "calls"):
        op.drop_table(table)
