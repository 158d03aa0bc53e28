"""How much of each call actor's reports is recorded, so a report sent again is recorded once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A table of its own, not a column of `calls`: only the recorder writes it, so its
    # row locks never meet the ingress's on `calls` (PostgreSQL).
    op.create_table(
        "report_progress",
        sa.Column("call_id", sa.String(26), nullable=False),
        sa.Column("sender", sa.String(32), nullable=False),
        sa.Column("actions_recorded", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "sender", name="pk_report_progress"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_report_progress_call_id_calls", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("report_progress")
