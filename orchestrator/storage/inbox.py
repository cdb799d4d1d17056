"""Moved to `orchestrator.persistence.inbox` (the inbox table's SQL); importable from here too."""

from orchestrator.persistence.inbox import claim_many as claim_many
