"""Moved: the outbox table's SQL to `orchestrator.persistence.outbox`, the relay that publishes
its rows to `orchestrator.messaging.relay`; importable from here too."""

from orchestrator.messaging.relay import Relay as Relay
from orchestrator.persistence.outbox import OutboxMessage as OutboxMessage
from orchestrator.persistence.outbox import PendingRow as PendingRow
from orchestrator.persistence.outbox import enqueue as enqueue
