"""events: received events, the waits that take them, and which instance got which

`events` records every domain event Warren received (from the broker or the API), once per
(source, id), with what it did: instances it started and waits it reached; one that did
neither is kept, inspectable, and delivered to a wait that begins later, within the
retention. `waits` holds the event waits under way (an instance's `WaitFor` nodes), indexed by
what they match. `event_deliveries` says which event reached which instance: each at most once.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column(
            "body",
            postgresql.JSONB(),
            nullable=False,
            comment="the event as waits see it: id, source, type, subject, time, data",
        ),
        sa.Column("attributes", postgresql.JSONB(), nullable=False),
        sa.Column("via", sa.Text(), nullable=False, comment="'broker' or 'api'"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("reached", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("problems", sa.Text(), nullable=True),
        sa.UniqueConstraint("source", "event_id", name="uq_events_source_id"),
        schema="warren",
        comment="Domain events received, once each, kept for the retention period.",
    )
    op.create_index("ix_events_type_received", "events", ["type", "received_at"], schema="warren")
    op.create_index("ix_events_received", "events", ["received_at"], schema="warren")
    op.create_index(
        "ix_events_body",
        "events",
        ["body"],
        schema="warren",
        postgresql_using="gin",
        postgresql_ops={"body": "jsonb_path_ops"},
    )
    op.create_table(
        "waits",
        sa.Column("instance_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("wait_key", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column(
            "path",
            sa.Text(),
            nullable=True,
            comment="the path of the correlation value in the event; null: any event of the type",
        ),
        sa.Column("value", postgresql.JSONB(), nullable=True),
        sa.Column("began_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parts", postgresql.ARRAY(sa.Text()), nullable=True, comment="the path, split"),
        sa.Column(
            "contains",
            postgresql.JSONB(),
            nullable=False,
            comment="what an event that matches contains, for the index on events.body",
        ),
        sa.PrimaryKeyConstraint("instance_id", "wait_key"),
        schema="warren",
        comment="Event waits under way; a row is deleted in the transaction that ends its wait.",
    )
    op.create_index("ix_waits_match", "waits", ["event_type", "path", "value"], schema="warren")
    op.create_index("ix_waits_began", "waits", ["began_at"], schema="warren")
    op.create_table(
        "event_deliveries",
        sa.Column(
            "event_seq",
            sa.BigInteger(),
            sa.ForeignKey("warren.events.seq", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("instance_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("wait_key", sa.Text(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_seq", "instance_id"),
        schema="warren",
        comment="Which event reached which instance (and wait): each event at most once each.",
    )


def downgrade() -> None:
    op.drop_table("event_deliveries", schema="warren")
    op.drop_index("ix_waits_began", table_name="waits", schema="warren")
    op.drop_index("ix_waits_match", table_name="waits", schema="warren")
    op.drop_table("waits", schema="warren")
    op.drop_index("ix_events_body", table_name="events", schema="warren")
    op.drop_index("ix_events_received", table_name="events", schema="warren")
    op.drop_index("ix_events_type_received", table_name="events", schema="warren")
    op.drop_table("events", schema="warren")
