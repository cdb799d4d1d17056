"""history causes: each transition keeps the event that caused it

`warren.history.cause` holds, on the first history row of each transition, the engine event
the transition decided (tagged JSON: ``{"event": {"event": "step_reply", ...}}``; a start's
also has ``"parent"``, the link of a child saga to the node that started it). Replaying those
events through the engine rebuilds the instance: `warren instances verify` compares the result
with the stored snapshot. Rows written before this revision have none: such instances cannot
be verified, which is not a failure.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.add_column(
        "history",
        sa.Column(
            "cause",
            postgresql.JSONB(),
            nullable=True,
            comment="on a transition's first row, the engine event that caused it, for replay: "
            '{"event": {"event": <tag>, ...}, "parent": <link, on a child\'s start>}; '
            "null on its other rows, and on rows written before 0009",
        ),
        schema="warren",
    )


def downgrade() -> None:
    op.drop_column("history", "cause", schema="warren")
