"""a message is one dead letter, however many copies of it were parked

The outbox publishes at least once, so two copies of a command can both reach the delivery limit
and be dead-lettered; each was recorded. Now a dead letter is unique by its message id and the
dead letter it replays (`replay_of`, from the `x-warren-replay-of` header a replay carries).
Copies recorded before this are dropped, the first one kept.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.add_column(
        "dead_letters",
        sa.Column(
            "replay_of",
            sa.BigInteger(),
            nullable=True,
            comment="the dead letter this message was a replay of; null for its first parking",
        ),
        schema="warren",
    )
    op.execute(
        """
        UPDATE warren.dead_letters SET replay_of = (headers->>'x-warren-replay-of')::bigint
        WHERE headers->>'x-warren-replay-of' ~ '^[0-9]{1,18}$'
        """
    )
    op.execute(
        """
        DELETE FROM warren.dead_letters AS later USING warren.dead_letters AS first
        WHERE later.message_id = first.message_id
          AND later.replay_of IS NOT DISTINCT FROM first.replay_of
          AND later.id > first.id
        """
    )
    op.create_index(
        "ux_dead_letters_message",
        "dead_letters",
        ["message_id", "replay_of"],
        unique=True,
        schema="warren",
        postgresql_nulls_not_distinct=True,
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_dead_letters_message", table_name="dead_letters", schema="warren")
    op.drop_column("dead_letters", "replay_of", schema="warren")
