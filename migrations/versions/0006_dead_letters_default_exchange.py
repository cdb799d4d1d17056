"""dead letters from the default exchange keep their address

Before this, a dead letter that came through the default exchange (published straight to a
queue) had its origin exchange "" stored as null, so it could not be replayed. Restore "" from
the headers it was recorded with; its queue is its routing key.
"""

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    # Warren's own header wins over RabbitMQ's x-death record, as in the recorder.
    op.execute(
        """
        UPDATE warren.dead_letters
        SET origin_exchange = '', origin_queue = coalesce(origin_queue, origin_routing_key)
        WHERE origin_exchange IS NULL
          AND coalesce(headers->>'x-warren-origin-exchange', headers->'x-death'->0->>'exchange')
              = ''
        """
    )


def downgrade() -> None:
    """Nothing to undo: "" is a valid origin exchange for the earlier code too."""
