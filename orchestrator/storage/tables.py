"""Every table Warren owns, in the `warren` schema. Migrations are generated from and tested
against this metadata (tests/integration/test_migrations.py)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

SCHEMA = "warren"
metadata = MetaData(schema=SCHEMA)

# ---- shared by orchestrators and workers: exactly-once plumbing -----------------------------

inbox = Table(
    "inbox",
    metadata,
    Column(
        "consumer", Text, nullable=False, comment="who consumed: 'orchestrator' or 'pool:<name>'"
    ),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "message_id"),
    comment="Dedup record: one row per message handled, written in the handling transaction.",
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("message_id", UUID(as_uuid=True), nullable=False),
    Column("exchange", Text, nullable=False),
    Column("routing_key", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="Messages committed with their cause, deleted once the broker confirmed them.",
)

step_results = Table(
    "step_results",
    metadata,
    Column("consumer", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("result", JSONB, nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("consumer", "idempotency_key"),
    comment="A step phase's effect, once: a later attempt of the same phase replays this result.",
)

# ---- orchestrator ---------------------------------------------------------------------------

definitions = Table(
    "definitions",
    metadata,
    Column("name", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("body", JSONB, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("name", "version"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("saga_name", Text, nullable=False),
    Column("saga_version", Integer, nullable=False),
    Column("status", Text, nullable=False),
    Column("seq", Integer, nullable=False, comment="sequence number of the last history event"),
    Column("state", JSONB, nullable=False, comment="the snapshot: engine InstanceState"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column(
        "idempotency_key", Text, nullable=True, comment="the caller's key: one instance per key"
    ),
    Column("request_hash", Text, nullable=True, comment="what was asked under that key or id"),
    Column("correlation_key", Text, nullable=True, comment="a free key given at start, to find it"),
    Column(
        "traceparent",
        Text,
        nullable=True,
        comment="W3C trace context of the start: operator actions join the saga's trace",
    ),
    Column(
        "parent_id",
        UUID(as_uuid=True),
        nullable=True,
        comment="the instance whose ChildSaga node started this one",
    ),
    # Listing is newest first by (created_at, id) with keyset pagination: one index per filter.
    Index("ix_instances_created", "created_at", "id"),
    Index("ix_instances_saga_created", "saga_name", "created_at", "id"),
    Index("ix_instances_status_created", "status", "created_at", "id"),
    Index("ix_instances_saga_status_created", "saga_name", "status", "created_at", "id"),
    Index("ix_instances_status_updated", "status", "updated_at"),
    Index("ix_instances_parent", "parent_id", postgresql_where=text("parent_id IS NOT NULL")),
    Index(
        "ix_instances_correlation",
        "correlation_key",
        "created_at",
        postgresql_where=text("correlation_key IS NOT NULL"),
    ),
    Index(
        "uq_instances_idempotency",
        "saga_name",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
)

history = Table(
    "history",
    metadata,
    Column("instance_id", UUID(as_uuid=True), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("type", Text, nullable=False),
    Column("step", Text, nullable=True),
    Column("phase", Text, nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("pool", Text, nullable=True),
    Column("data", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column(
        "cause",
        JSONB,
        nullable=True,
        comment="on a transition's first row, the engine event that caused it, for replay: "
        '{"event": {"event": <tag>, ...}, "parent": <link, on a child\'s start>}; '
        "null on its other rows, and on rows written before 0009",
    ),
    PrimaryKeyConstraint("instance_id", "seq"),
    Index(
        "ix_history_pool_recorded",
        "pool",
        "recorded_at",
        postgresql_where=text("pool IS NOT NULL"),
    ),
    comment="Append-only event log per instance; the unique (instance, seq) forbids a fork.",
)

timers = Table(
    "timers",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("instance_id", UUID(as_uuid=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("step", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("traceparent", Text, nullable=True),
    Index("ix_timers_due_at", "due_at"),
    comment="Durable timers; a row is deleted in the transaction that fires it.",
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("message_id", Text, nullable=True),
    Column("kind", Text, nullable=True, comment="command, reply, or null when it did not decode"),
    Column("instance_id", UUID(as_uuid=True), nullable=True),
    Column("reason", Text, nullable=False),
    Column("origin_exchange", Text, nullable=True),
    Column("origin_routing_key", Text, nullable=True),
    Column("origin_queue", Text, nullable=True),
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
    Column(
        "replay_of",
        BigInteger,
        nullable=True,
        comment="the dead letter this message was a replay of; null for its first parking",
    ),
    Index(
        "ix_dead_letters_instance", "instance_id", postgresql_where=text("instance_id IS NOT NULL")
    ),
    # Copies of one message on the wire (the outbox publishes at least once) are one dead
    # letter; a replay parked again is another.
    Index(
        "ux_dead_letters_message",
        "message_id",
        "replay_of",
        unique=True,
        postgresql_nulls_not_distinct=True,
        postgresql_where=text("message_id IS NOT NULL"),
    ),
    comment="Messages parked in the dead-letter queue, recorded with their reason and origin.",
)

pool_breakers = Table(
    "pool_breakers",
    metadata,
    Column("pool", Text, primary_key=True),
    Column("state", Text, nullable=False, comment="closed, open or half_open"),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("calls", Integer, nullable=False, server_default=text("0")),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    comment="Circuit breaker per worker pool: while open, its commands wait in the outbox.",
)

# ---- events in ---------------------------------------------------------------------------------

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column(
        "body",
        JSONB,
        nullable=False,
        comment="the event as waits see it: id, source, type, subject, time, data",
    ),
    Column("attributes", JSONB, nullable=False),
    Column("via", Text, nullable=False, comment="'broker' or 'api'"),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("started", Integer, nullable=False, server_default=text("0")),
    Column("reached", Integer, nullable=False, server_default=text("0")),
    Column("problems", Text, nullable=True),
    UniqueConstraint("source", "event_id", name="uq_events_source_id"),
    Index("ix_events_type_received", "type", "received_at"),
    Index("ix_events_received", "received_at"),
    # A kept event is found by containment of its correlation value (persistence.events).
    Index(
        "ix_events_body", "body", postgresql_using="gin", postgresql_ops={"body": "jsonb_path_ops"}
    ),
    comment="Domain events received, once each, kept for the retention period.",
)

waits = Table(
    "waits",
    metadata,
    Column("instance_id", UUID(as_uuid=True), nullable=False),
    Column("wait_key", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column(
        "path",
        Text,
        nullable=True,
        comment="the path of the correlation value in the event; null: any event of the type",
    ),
    Column("value", JSONB, nullable=True),
    Column("began_at", DateTime(timezone=True), nullable=False),
    Column("parts", ARRAY(Text), nullable=True, comment="the path, split"),
    Column(
        "contains",
        JSONB,
        nullable=False,
        comment="what an event that matches contains, for the index on events.body",
    ),
    PrimaryKeyConstraint("instance_id", "wait_key"),
    Index("ix_waits_match", "event_type", "path", "value"),
    Index("ix_waits_began", "began_at"),
    comment="Event waits under way; a row is deleted in the transaction that ends its wait.",
)

event_deliveries = Table(
    "event_deliveries",
    metadata,
    Column(
        "event_seq", BigInteger, ForeignKey("warren.events.seq", ondelete="CASCADE"), nullable=False
    ),
    Column("instance_id", UUID(as_uuid=True), nullable=False),
    Column("wait_key", Text, nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("event_seq", "instance_id"),
    comment="Which event reached which instance (and wait): each event at most once each.",
)
