"""instance traceparent"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


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
