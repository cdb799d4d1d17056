"""The envelope builders: every field of a command comes from the engine's output, and a reply
carries its command's identity back, whatever the values."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.engine import (
    Dispatch,
    Failure,
    InstanceState,
    Phase,
    SagaStatus,
    StepState,
    StepStatus,
)
from orchestrator.messaging.envelope import Command, Reply, ReplyPayload, decode
from orchestrator.messaging.outgoing import command_for, reply_to
from orchestrator.messaging.topology import REPLY_ROUTING_KEY, Topology
from orchestrator.messaging.versions import UPCASTERS
from orchestrator.service.transitions import reply_event

TOPOLOGY = Topology(namespace="unit")
AT = datetime(2025, 1, 1, tzinfo=UTC)

names = st.text(min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
traceparents = st.none() | st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", fullmatch=True)
failures = st.builds(Failure, type=names, message=st.text(max_size=20), retryable=st.booleans())
payloads = st.builds(
    ReplyPayload, ok=st.booleans(), result=json_values, failure=st.none() | failures
)


@st.composite
def instances(draw: st.DrawFn) -> InstanceState:
    results = draw(st.dictionaries(names, json_values, max_size=4))
    return InstanceState(
        id=draw(st.uuids()),
        saga=draw(names),
        version=draw(st.integers(1, 10_000)),
        status=SagaStatus.RUNNING,
        input=draw(json_values),
        steps={
            name: StepState(status=StepStatus.SUCCEEDED, attempt=1, result=result)
            for name, result in results.items()
        },
        completed=tuple(results),
        seq=draw(st.integers(0, 10_000)),
        created_at=AT,
        updated_at=AT,
    )


dispatches = st.builds(
    Dispatch,
    step=names,
    phase=st.sampled_from(Phase),
    command=names,
    pool=names,
    attempt=st.integers(1, 1_000),
    seq=st.integers(1, 10_000),
)


def _command(
    instance: InstanceState,
    dispatch: Dispatch,
    causation_id: UUID | None,
    traceparent: str | None,
) -> Command:
    outgoing = command_for(
        instance, dispatch, TOPOLOGY, causation_id=causation_id, traceparent=traceparent
    )
    command = decode(outgoing.body)
    assert isinstance(command, Command)
    assert outgoing.message_id == command.id
    assert (outgoing.exchange, outgoing.routing_key) == (TOPOLOGY.commands_exchange, dispatch.pool)
    assert outgoing.headers == ({"traceparent": traceparent} if traceparent else {})
    return command


@given(
    instance=instances(),
    dispatch=dispatches,
    causation_id=st.none() | st.uuids(),
    traceparent=traceparents,
)
def test_a_command_carries_its_instance_and_dispatch(
    instance: InstanceState,
    dispatch: Dispatch,
    causation_id: UUID | None,
    traceparent: str | None,
) -> None:
    command = _command(instance, dispatch, causation_id, traceparent)

    assert msgspec.structs.asdict(command) | {"payload": None} == {
        "v": command.v,
        "id": command.id,
        "saga": instance.saga,
        "saga_version": instance.version,
        "instance_id": instance.id,
        "step": dispatch.step,
        "phase": dispatch.phase,
        "command": dispatch.command,
        "attempt": dispatch.attempt,
        "seq": dispatch.seq,
        "causation_id": causation_id,
        "correlation_id": instance.id,
        "traceparent": traceparent,
        "timestamp": command.timestamp,
        "payload_version": UPCASTERS.current(dispatch.command),
        "payload": None,
    }
    assert command.payload.input == instance.input
    assert command.payload.results == instance.results()
    assert command.payload.idempotency_key == f"{instance.id}:{dispatch.step}:{dispatch.phase}"


@given(
    instance=instances(),
    dispatch=dispatches,
    causation_id=st.none() | st.uuids(),
    traceparent=traceparents,
    continued=traceparents,
    payload=payloads,
)
def test_a_reply_carries_its_commands_identity_back(
    instance: InstanceState,
    dispatch: Dispatch,
    causation_id: UUID | None,
    traceparent: str | None,
    continued: str | None,
    payload: ReplyPayload,
) -> None:
    command = _command(instance, dispatch, causation_id, traceparent)

    outgoing = reply_to(command, payload, TOPOLOGY, traceparent=continued)

    reply = decode(outgoing.body)
    assert isinstance(reply, Reply)
    assert outgoing.message_id == reply.id != command.id
    assert (outgoing.exchange, outgoing.routing_key) == (
        TOPOLOGY.replies_exchange,
        REPLY_ROUTING_KEY,
    )
    # Every envelope field, the ones added later included, is the command's own, except
    # the reply's identity, its cause (the command), its trace context and its time.
    own = {"id", "causation_id", "traceparent", "timestamp", "payload"}
    copied = [f for f in Reply.__struct_fields__ if f not in own]
    assert {f: getattr(reply, f) for f in copied} == {f: getattr(command, f) for f in copied}
    assert reply.causation_id == command.id
    assert reply.correlation_id == instance.id
    assert reply.traceparent == (continued or traceparent)
    assert outgoing.headers == ({"traceparent": reply.traceparent} if reply.traceparent else {})
    assert reply.payload == payload


@given(instance=instances(), dispatch=dispatches, payload=payloads)
def test_a_reply_becomes_the_engine_event_of_the_attempt_that_was_dispatched(
    instance: InstanceState, dispatch: Dispatch, payload: ReplyPayload
) -> None:
    command = _command(instance, dispatch, None, None)
    reply = decode(reply_to(command, payload, TOPOLOGY).body)
    assert isinstance(reply, Reply)

    event = reply_event(reply)

    assert (event.step, event.phase, event.attempt) == (
        dispatch.step,
        dispatch.phase,
        dispatch.attempt,
    )
    assert (event.ok, event.result, event.failure) == (
        payload.ok,
        payload.result,
        payload.failure,
    )
