"""Starting an instance: validate, then one transaction (snapshot + history + first command),
written as any transition is (`service.transitions.start_many`). Starts asked while others
are committing share the next transaction (`service.group_commit`).

Idempotent on request: a start with an idempotency key (or a caller-chosen instance id) that
was used before returns that instance when the request is the same, and is refused when it is
not. The unique index settles races: the second of two concurrent starts waits for the first
to commit, then finds its instance.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema
import msgspec
import referencing
import referencing.exceptions

from orchestrator.definitions.model import unstorable
from orchestrator.errors import IdempotencyConflict, InputInvalid, WarrenError
from orchestrator.messaging.envelope import new_message_id
from orchestrator.observability import metrics, tracing
from orchestrator.persistence import instances
from orchestrator.service import transitions
from orchestrator.service.group_commit import GroupCommit
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from uuid import UUID

    from opentelemetry.trace import Span
    from sqlalchemy.ext.asyncio import AsyncConnection

    from orchestrator.definitions import Saga
    from orchestrator.engine import InstanceState
    from orchestrator.persistence.outbox import PendingRow


START_LANES = 2
"""Groups of starts committing at once: one can commit while the next is written."""
START_GROUP_LIMIT = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class StartRequest:
    saga: str
    input: Any
    version: int | None = None
    idempotency_key: str | None = None
    instance_id: UUID | None = None
    correlation_key: str | None = None

    @property
    def fingerprint(self) -> str:
        """What makes two requests "the same" under one key."""
        canonical = msgspec.json.encode(
            [self.saga, self.version, self.input, self.correlation_key], order="sorted"
        )
        return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class Started:
    instance: InstanceState
    created: bool
    """False when an earlier identical request already started it."""


@dataclass(frozen=True, slots=True)
class _Asked:
    request: StartRequest
    traceparent: str | None
    """The trace the start was asked in: its instance and first commands carry it on."""


class SagaStarter(transitions.TransitionService):
    async def start(self, request: StartRequest) -> Started:
        with tracing.span("saga.start") as current:
            started = await self._starts.submit(_Asked(request, tracing.current_traceparent()))
            self._started(current, started)
        return started

    async def start_many(self, requests: list[StartRequest]) -> list[Started | WarrenError]:
        """Several starts asked at once (`POST /v1/sagas/{name}/batch`): each committed or
        refused on its own, as `start` would, in groups of up to START_GROUP_LIMIT. Each
        instance gets a trace of its own (one trace per saga), linked to the caller's span."""
        links = tracing.link_to_current()
        spans = [tracing.root_span("saga.start", links=links) for _ in requests]
        try:
            outcomes = await self._starts.submit_many(
                [
                    _Asked(request, tracing.traceparent_of(span))
                    for request, span in zip(requests, spans, strict=True)
                ]
            )
            answers: list[Started | WarrenError] = []
            for outcome, span in zip(outcomes, spans, strict=True):
                if isinstance(outcome, Started):
                    self._started(span, outcome)
                elif isinstance(outcome, WarrenError):
                    span.record_exception(outcome)
                    tracing.mark_error(span, outcome.message)
                else:
                    raise outcome  # a bug: the API answers 500 and logs it
                answers.append(outcome)
            return answers
        finally:
            for span in spans:
                span.end()

    @staticmethod
    def _started(current: Span, started: Started) -> None:
        if current.is_recording():
            current.set_attributes(
                tracing.saga_attributes(
                    saga=started.instance.saga,
                    version=started.instance.version,
                    instance_id=started.instance.id,
                )
                | {"warren.start.created": started.created}
            )
        if started.created:
            metrics.sagas_started.labels(started.instance.saga).inc()

    @functools.cached_property
    def _starts(self) -> GroupCommit[_Asked, Started]:
        """Concurrent starts share transactions (group commit)."""
        return GroupCommit(self._start_group, lanes=START_LANES, limit=START_GROUP_LIMIT)

    async def _start_group(self, group: list[_Asked]) -> list[Started | Exception]:
        """One transaction for the group: each start refused alone (an unknown saga, an input
        its schema refuses, a key used for another request) gets its error; the rest commit."""
        with self.relay.forgetting() as published:
            async with transaction(self.engine) as conn:
                outcomes, pending = await self._start_in(conn, group, published)
        await self.relay.publish_committed(pending)
        return outcomes

    async def _start_in(
        self, conn: AsyncConnection, group: list[_Asked], published: list[int]
    ) -> tuple[list[Started | Exception], list[PendingRow]]:
        outcomes: list[Started | Exception | None] = [None] * len(group)
        starts: list[tuple[int, transitions.NewStart]] = []
        latest = await self.definitions.latest_versions(
            conn, {a.request.saga for a in group if a.request.version is None}
        )
        for index, asked in enumerate(group):
            request = asked.request
            try:
                definition = await self.definitions.get_latest_or(
                    conn, request.saga, request.version, latest=latest
                )
                self.validate_input(definition, request.input)
            except WarrenError as exc:
                if exc.retryable:
                    raise
                outcomes[index] = exc
                continue
            keyed = request.idempotency_key is not None or request.instance_id is not None
            new = instances.NewInstance(
                idempotency_key=request.idempotency_key,
                request_hash=request.fingerprint if keyed else None,
                correlation_key=request.correlation_key,
                traceparent=asked.traceparent,
            )
            instance_id = request.instance_id or new_message_id()
            starts.append(
                (index, transitions.NewStart(definition, instance_id, request.input, new))
            )
        made, pending = await transitions.start_many(
            conn,
            self.topology,
            [start for _, start in starts],
            definitions=self.definitions,
            forget=published,
        )
        for (index, _), transition in zip(starts, made, strict=True):
            if transition is not None:
                outcomes[index] = Started(transition.instance, created=True)
                continue
            try:
                outcomes[index] = Started(await self._earlier(conn, group[index].request), False)
            except IdempotencyConflict as exc:
                outcomes[index] = exc
        answered = [outcome for outcome in outcomes if outcome is not None]
        assert len(answered) == len(group)  # each start refused, made, or made before
        return answered, pending

    async def _earlier(self, conn: AsyncConnection, request: StartRequest) -> InstanceState:
        """The instance an earlier request made under the same key or id, if it is the same."""
        if request.idempotency_key is not None:
            found = await instances.started_with_key(conn, request.saga, request.idempotency_key)
            what = f"idempotency key {request.idempotency_key!r}"
        else:
            chosen = request.instance_id  # a start without a key collides only by a chosen id
            found = None if chosen is None else await instances.started_with_id(conn, chosen)
            what = f"instance id {request.instance_id}"
        if found is None or found.request_hash != request.fingerprint:
            raise IdempotencyConflict(
                f"{what} was already used to start a different request; use a new key "
                "(or send exactly the same request to get the same instance)"
            )
        return await instances.load(conn, found.id)

    def validate_input(self, definition: Saga, input: Any) -> None:
        self._inputs.check(definition, input)

    @functools.cached_property
    def _inputs(self) -> InputValidator:
        return InputValidator()


class InputValidator:
    """Checks a start's input against its definition's input schema (each schema compiled
    once): the API's starts, the child sagas' and the test harness's."""

    def __init__(self) -> None:
        self._validators: dict[tuple[str, int], jsonschema.protocols.Validator] = {}

    def check(self, definition: Saga, input: Any) -> None:
        """`InputInvalid` unless `input` can be stored and satisfies the schema."""
        problem = unstorable(input)
        if problem is not None:
            raise InputInvalid("input cannot be stored", errors=[problem])
        if definition.input_schema is None:
            return
        key = (definition.name, definition.version)
        validator = self._validators.get(key)
        if validator is None:
            # An empty registry: references resolve inside the schema only, nothing is ever
            # fetched (jsonschema's default would retrieve any URL, blocking the event loop).
            validator = jsonschema.Draft202012Validator(
                definition.input_schema, registry=referencing.Registry()
            )
            self._validators[key] = validator
        try:
            errors = sorted(validator.iter_errors(input), key=lambda e: list(e.absolute_path))
        except referencing.exceptions.Unresolvable as exc:
            raise InputInvalid(
                f"the input schema of saga {definition.name!r} version {definition.version} "
                "has a reference that does not resolve; register a version that fixes it",
                errors=[f"(schema): cannot resolve {exc}"],
            ) from exc
        except RecursionError as exc:  # a schema that refers to itself with no way out
            raise InputInvalid(
                f"the input schema of saga {definition.name!r} version {definition.version} "
                "refers to itself endlessly; register a version that fixes it",
                errors=["(schema): endless recursion"],
            ) from exc
        if errors:
            details = [
                f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
            ]
            raise InputInvalid(
                f"input does not match the schema of saga {definition.name!r} "
                f"version {definition.version}",
                errors=details,
            )
