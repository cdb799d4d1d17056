"""Moved: the relay's breaker cache to `orchestrator.messaging.relay`, the breaker states to
`orchestrator.persistence.pool_breakers`; importable from here too."""

from orchestrator.messaging.relay import BreakerBoard as BreakerBoard
from orchestrator.persistence.pool_breakers import BreakerState as BreakerState
