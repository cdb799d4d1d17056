"""Operator actions on one instance, under the same transaction rules as everything else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID, uuid5

from orchestrator.engine import (
    Cancel,
    Event,
    HistoryEventType,
    InstanceState,
    Resume,
    SagaStatus,
    Signal,
    SignalReceived,
)
from orchestrator.errors import InvalidState
from orchestrator.messaging.envelope import new_message_id
from orchestrator.observability import metrics, tracing
from orchestrator.persistence import inbox, instances
from orchestrator.service.transitions import TransitionService, apply_event
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from orchestrator.engine import Transition

SIGNALS_CONSUMER = "signals"
"""The inbox consumer of signals: a signal sent twice with the same id counts once."""
_SIGNAL_IDS = UUID("c4d5e6f7-0819-4a2b-8c3d-4e5f60718293")


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    id: str
    outcome: str
    """``delivered`` (a wait took it), ``kept`` (until a wait for it begins) or ``duplicate``."""
    instance: InstanceState


class Operations(TransitionService):
    async def cancel(self, instance_id: UUID, reason: str) -> InstanceState:
        """Stop forward progress and compensate what was done. Idempotent while compensating."""

        def check(state: InstanceState) -> None:
            if state.status.terminal:
                raise InvalidState(
                    f"instance {instance_id} already ended ({state.status.value}); "
                    "nothing to cancel"
                )

        return await self._state_after(instance_id, Cancel(reason=reason), check)

    async def retry(self, instance_id: UUID) -> InstanceState:
        """Resume the compensation that a `failed` instance is stuck on."""

        def check(state: InstanceState) -> None:
            if state.status is not SagaStatus.FAILED:
                raise InvalidState(
                    f"instance {instance_id} is {state.status.value}; only failed instances "
                    "can be retried"
                )

        return await self._state_after(instance_id, Resume(), check)

    async def signal(
        self, instance_id: UUID, name: str, data: Any, signal_id: str | None = None
    ) -> SignalOutcome:
        """Send a signal to a running instance: its wait for `name` takes it, or it is kept
        until one begins. With `signal_id`, sending it again changes nothing."""
        chosen = signal_id or str(new_message_id())

        def check(state: InstanceState) -> None:
            if state.status is not SagaStatus.RUNNING:
                raise InvalidState(
                    f"instance {instance_id} is {state.status.value}; signals go to running "
                    "instances only"
                )

        event = SignalReceived(signal=Signal(name=name, id=chosen, data=data))
        once = uuid5(_SIGNAL_IDS, f"{instance_id}\n{name}\n{chosen}")
        transition = await self._apply(instance_id, event, check, once=once)
        if transition is None:
            async with transaction(self.engine) as conn:
                state = await instances.load(conn, instance_id)
            return SignalOutcome(id=chosen, outcome="duplicate", instance=state)
        took = any(
            h.type is HistoryEventType.SIGNAL_RECEIVED and h.step is not None
            for h in transition.history
        )
        return SignalOutcome(
            id=chosen, outcome="delivered" if took else "kept", instance=transition.instance
        )

    async def _state_after(
        self, instance_id: UUID, event: Event, check: Callable[[InstanceState], None]
    ) -> InstanceState:
        transition = await self._apply(instance_id, event, check)
        assert transition is not None  # only a request with an inbox id is ever a copy
        return transition.instance

    async def _apply(
        self,
        instance_id: UUID,
        event: Event,
        check: Callable[[InstanceState], None],
        *,
        once: UUID | None = None,
    ) -> Transition | None:
        """Apply `event` in a transaction of its own; with `once`, the request's id in the
        inbox: None (nothing done) when it was handled before."""
        async with transaction(self.engine) as conn:
            if once is not None and not await inbox.claim_many(conn, SIGNALS_CONSUMER, [once]):
                return None
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
        return transition
