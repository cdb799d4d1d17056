"""Operator actions on one instance, under the same transaction rules as everything else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine import Cancel, Event, InstanceState, Resume, SagaStatus
from orchestrator.errors import InvalidState
from orchestrator.observability import metrics, tracing
from orchestrator.persistence import instances
from orchestrator.service.transitions import TransitionService, apply_event
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from collections.abc import Callable
    from uuid import UUID


class Operations(TransitionService):
    async def cancel(self, instance_id: UUID, reason: str) -> InstanceState:
        """Stop forward progress and compensate what was done. Idempotent while compensating."""

        def check(state: InstanceState) -> None:
            if state.status.terminal:
                raise InvalidState(
                    f"instance {instance_id} already ended ({state.status.value}); "
                    "nothing to cancel"
                )

        return await self._apply(instance_id, Cancel(reason=reason), check)

    async def retry(self, instance_id: UUID) -> InstanceState:
        """Resume the compensation that a `failed` instance is stuck on."""

        def check(state: InstanceState) -> None:
            if state.status is not SagaStatus.FAILED:
                raise InvalidState(
                    f"instance {instance_id} is {state.status.value}; only failed instances "
                    "can be retried"
                )

        return await self._apply(instance_id, Resume(), check)

    async def _apply(
        self, instance_id: UUID, event: Event, check: Callable[[InstanceState], None]
    ) -> InstanceState:
        async with transaction(self.engine) as conn:
            # The action joins the saga's trace, linked to the request that asked for it.
            started_in = await instances.traceparent(conn, instance_id)
            transition, pending = await apply_event(
                conn,
                self.definitions,
                self.topology,
                instance_id,
                event,
                check=check,
                trace_parent=tracing.from_traceparent(started_in),
                trace_links=tracing.link_to_current(),
            )
        metrics.observe_transition(transition)
        await self.relay.publish_committed(pending)
        return transition.instance
