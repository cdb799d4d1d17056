"""Outgoing messages: what the engine decided (and what a handler answered), as envelopes
addressed for the broker.

The one place that copies envelope fields (ids, causation and correlation, traceparent, saga,
version, instance, step, phase, attempt, sequence): the orchestrator's shell and the test
harness build commands here, the worker runtime and the harness build replies here. Workers
import it, so it speaks only the engine's vocabulary: what it needs of an instance and of a
dispatch is said by the protocols below, which the engine's `InstanceState` and `Dispatch`
satisfy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from orchestrator.messaging.cloudevents import CloudEvent, event_message
from orchestrator.messaging.envelope import (
    Command,
    CommandPayload,
    Reply,
    ReplyPayload,
    encode,
    new_message_id,
    utcnow,
)
from orchestrator.messaging.topology import REPLY_ROUTING_KEY
from orchestrator.messaging.versions import UPCASTERS
from orchestrator.persistence.outbox import OutboxMessage

if TYPE_CHECKING:
    from uuid import UUID

    from orchestrator.engine.vocabulary import Failure, Phase
    from orchestrator.messaging.envelope import Envelope
    from orchestrator.messaging.topology import Topology


class Instance(Protocol):
    """What a command carries of its instance (the engine's `InstanceState`)."""

    @property
    def id(self) -> UUID: ...
    @property
    def saga(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def input(self) -> Any: ...
    def results(self) -> dict[str, Any]: ...


class Dispatched(Protocol):
    """One attempt the engine sends out (the engine's `Dispatch`)."""

    @property
    def step(self) -> str: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def command(self) -> str: ...
    @property
    def pool(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def input(self) -> Any:
        """The command's input when not the saga's (UNSET)."""

    @property
    def with_results(self) -> bool: ...


def command_for(
    instance: Instance,
    dispatch: Dispatched,
    topology: Topology,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> OutboxMessage:
    """The command of one attempt, routed to the dispatch's pool. Every command of an instance
    is correlated by the instance id; `causation_id` is the message that caused it (none for a
    start, a timer or an operator)."""
    command = Command(
        id=new_message_id(),
        saga=instance.saga,
        saga_version=instance.version,
        instance_id=instance.id,
        step=dispatch.step,
        phase=dispatch.phase,
        command=dispatch.command,
        attempt=dispatch.attempt,
        seq=dispatch.seq,
        causation_id=causation_id,
        correlation_id=instance.id,
        traceparent=traceparent,
        timestamp=utcnow(),
        # The input's shape as this process knows it; older workers refuse newer shapes.
        payload_version=UPCASTERS.current(dispatch.command),
        payload=CommandPayload(
            input=instance.input if dispatch.input is msgspec.UNSET else dispatch.input,
            results=instance.results() if dispatch.with_results else {},
            # Stable across attempts and redeliveries: the worker applies a phase's effect once.
            idempotency_key=f"{instance.id}:{dispatch.step}:{dispatch.phase.value}",
        ),
    )
    return _addressed(command, topology.commands_exchange, dispatch.pool)


class Published(Protocol):
    """A domain event an instance publishes (the engine's `Emitted`)."""

    @property
    def id(self) -> UUID: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> Any: ...
    @property
    def dataversion(self) -> int: ...


EVENT_SOURCE_PREFIX = "warren/sagas/"
"""An event a saga publishes has ``warren/sagas/<saga>`` as its CloudEvents source."""


def event_from(
    instance: Instance,
    event: Published,
    topology: Topology,
    *,
    traceparent: str | None = None,
) -> OutboxMessage:
    """A domain event an instance publishes, as a CloudEvent to the events exchange: its
    subject and correlation are the instance."""
    return event_message(
        CloudEvent(
            id=str(event.id),
            source=f"{EVENT_SOURCE_PREFIX}{instance.saga}",
            type=event.type,
            time=utcnow(),
            subject=str(instance.id),
            dataversion=event.dataversion,
            correlationid=str(instance.id),
            traceparent=traceparent,
            data=event.data,
        ),
        topology,
    )


def reply_to(
    command: Command,
    payload: ReplyPayload,
    topology: Topology,
    *,
    traceparent: str | None = None,
) -> OutboxMessage:
    """The reply to `command`: caused by it, carrying its identity back to the orchestrators.
    `traceparent` is where the reply continues the trace (the command's when not given).
    The reply echoes the command's payload version: the exchange was in that version's terms."""
    return _reply(
        command,
        payload,
        topology,
        causation_id=command.id,
        traceparent=traceparent or command.traceparent,
        payload_version=command.payload_version,
    )


def reply_to_parent(
    answer: ParentAnswer,
    topology: Topology,
    *,
    causation_id: UUID | None = None,
    traceparent: str | None = None,
) -> OutboxMessage:
    """A child saga's end, as the reply its parent's node waits for: addressed with the
    parent's identity, from the link the child keeps."""
    payload = ReplyPayload(ok=answer.ok, result=answer.result, failure=answer.failure)
    return _reply(
        answer.parent, payload, topology, causation_id=causation_id, traceparent=traceparent
    )


class Answered(Protocol):
    """What a reply answers: a command, or a child saga's link to its parent."""

    @property
    def saga(self) -> str: ...
    @property
    def saga_version(self) -> int: ...
    @property
    def instance_id(self) -> UUID: ...
    @property
    def step(self) -> str: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def command(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def correlation_id(self) -> UUID: ...


class ParentAnswer(Protocol):
    """A child saga's end as its parent hears it (the engine's `ParentReply`)."""

    @property
    def parent(self) -> Answered: ...
    @property
    def ok(self) -> bool: ...
    @property
    def result(self) -> Any: ...
    @property
    def failure(self) -> Failure | None: ...


def _reply(
    to: Answered,
    payload: ReplyPayload,
    topology: Topology,
    *,
    causation_id: UUID | None,
    traceparent: str | None,
    payload_version: int = 1,
) -> OutboxMessage:
    reply = Reply(
        id=new_message_id(),
        saga=to.saga,
        saga_version=to.saga_version,
        instance_id=to.instance_id,
        step=to.step,
        phase=to.phase,
        command=to.command,
        attempt=to.attempt,
        seq=to.seq,
        causation_id=causation_id,
        correlation_id=to.correlation_id,
        traceparent=traceparent,
        timestamp=utcnow(),
        payload_version=payload_version,
        payload=payload,
    )
    return _addressed(reply, topology.replies_exchange, REPLY_ROUTING_KEY)


def _addressed(message: Envelope, exchange: str, routing_key: str) -> OutboxMessage:
    """Ready to publish (or to write to the outbox). The trace context goes in the headers
    too: the relay's publish span continues the trace from there, even from a sweeper."""
    return OutboxMessage(
        message_id=message.id,
        exchange=exchange,
        routing_key=routing_key,
        body=encode(message),
        headers={"traceparent": message.traceparent} if message.traceparent else {},
    )
