"""instance traceparent

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 09:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column(
            "traceparent",
            sa.Text(),
            nullable=True,
            comment="W3C trace context of the start: operator actions join the saga's trace",
        ),
        schema="warren",
    )


def downgrade() -> None:
    op.drop_column("instances", "traceparent", schema="warren")
