"""Checking an event's data against the JSON Schemas declared for its type.

Definitions may declare a JSON Schema (2020-12) per event type (`Saga.event_schemas`); an event
that does not satisfy every schema declared for its type is refused: 422 at the API, dead-lettered
on AMQP, with the validation message. References resolve inside a schema only: nothing is ever
fetched.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import jsonschema
import referencing
import referencing.exceptions

from orchestrator.errors import EventInvalid

if TYPE_CHECKING:
    from collections.abc import Sequence

    from orchestrator.messaging.cloudevents import CloudEvent

_CACHE_LIMIT = 1024
_validators: dict[str, jsonschema.protocols.Validator] = {}


def check_event_data(schemas: Sequence[dict[str, Any]], event: CloudEvent) -> None:
    """`EventInvalid` unless `event.data` satisfies each of `schemas` (those declared for its
    type); its message names the event type and each failing path."""
    for schema in schemas:
        problems = _violations(_validator(schema), event)
        if problems:
            raise EventInvalid(
                f"event {event.type!r} (id {event.id!r}) does not match the schema declared "
                f"for its type: {'; '.join(problems)}",
                errors=problems,
            )


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    """Each schema compiled once (keyed by its content: definitions are data)."""
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _validators.get(key)
    if validator is None:
        if len(_validators) >= _CACHE_LIMIT:
            _validators.clear()
        # An empty registry: jsonschema's default would retrieve any URL a $ref names.
        validator = jsonschema.Draft202012Validator(schema, registry=referencing.Registry())
        _validators[key] = validator
    return validator


def _violations(validator: jsonschema.protocols.Validator, event: CloudEvent) -> list[str]:
    try:
        errors = sorted(validator.iter_errors(event.data), key=lambda e: list(e.absolute_path))
    except referencing.exceptions.Unresolvable as exc:
        return [f"(schema): a reference does not resolve: {exc}"]
    except RecursionError:  # a schema that refers to itself with no way out
        return ["(schema): it refers to itself endlessly"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
