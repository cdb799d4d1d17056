"""Starting an instance: validate, then one transaction (snapshot + history + first command)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jsonschema

from orchestrator.engine import InstanceState, Start, decide, new_instance
from orchestrator.errors import InputInvalid
from orchestrator.messaging.envelope import new_message_id, utcnow
from orchestrator.persistence import definitions, instances
from orchestrator.storage.database import transaction

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from orchestrator.definitions import Saga
    from orchestrator.messaging.topology import Topology
    from orchestrator.storage.outbox import Relay


class SagaStarter:
    def __init__(self, engine: AsyncEngine, relay: Relay, topology: Topology) -> None:
        self.engine = engine
        self.relay = relay
        self.topology = topology
        self._validators: dict[tuple[str, int], jsonschema.protocols.Validator] = {}

    async def start(self, name: str, input: Any, *, version: int | None = None) -> InstanceState:
        async with transaction(self.engine) as conn:
            definition = await definitions.load(conn, name, version)
            self.validate_input(definition, input)
            now = utcnow()
            state = new_instance(definition, new_message_id(), input, now)
            transition = decide(definition, state, Start(input=input), now)
            pending = await instances.save_transition(conn, transition, self.topology, created=True)
        await self.relay.publish_committed(pending)
        return transition.instance

    def validate_input(self, definition: Saga, input: Any) -> None:
        if definition.input_schema is None:
            return
        key = (definition.name, definition.version)
        validator = self._validators.get(key)
        if validator is None:
            validator = jsonschema.Draft202012Validator(definition.input_schema)
            self._validators[key] = validator
        errors = sorted(validator.iter_errors(input), key=lambda e: list(e.absolute_path))
        if errors:
            details = [
                f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
            ]
            raise InputInvalid(
                f"input does not match the schema of saga {definition.name!r} "
                f"version {definition.version}",
                errors=details,
            )
