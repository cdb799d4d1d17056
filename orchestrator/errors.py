"""One rooted error tree for Warren. Whether an error is worth retrying is data on the error.

    WarrenError                      (retryable: False unless said otherwise)
    ├── DefinitionError              a saga definition is malformed (raised when it is built)
    ├── RegistrationConflict         same (name, version), different content
    ├── NotFound
    │   ├── SagaNotFound             no definition under that name (or version)
    │   └── InstanceNotFound
    ├── InputInvalid                 saga input fails the definition's JSON Schema
    ├── EventInvalid                 an event is malformed or fails its type's JSON Schema
    ├── Conflict
    │   ├── IdempotencyConflict      a start reuses a key (or instance id) for another request
    │   └── InvalidState             an operation the instance's status does not allow
    ├── MessageError                 a message cannot be decoded or has an unknown kind/version
    │   └── UnknownVersion           a payload newer than any this process knows
    ├── StorageError                 Postgres failed; retryable (translated from the driver)
    │   └── DatabaseRefused          the login or the database's name is refused
    └── BrokerError                  RabbitMQ failed; retryable (translated from aio-pika)
        └── UnroutableMessage        a mandatory publish came back unroutable

Handler-facing errors (`StepFailed`) live in the same tree: see `workers`.
"""

from __future__ import annotations


class WarrenError(Exception):
    """Root of every error Warren raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class DefinitionError(WarrenError):
    """A saga definition is not valid; the message says what to change."""


class RegistrationConflict(WarrenError):
    """A definition with this name and version exists with different content."""


class NotFound(WarrenError):
    """Something looked up by name or id does not exist."""


class SagaNotFound(NotFound):
    """No saga definition under that name (or version)."""


class InstanceNotFound(NotFound):
    """No saga instance with that id."""


class InputInvalid(WarrenError):
    """The saga input does not satisfy the definition's input schema."""

    def __init__(self, message: str, *, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


class EventInvalid(WarrenError):
    """An event that cannot be accepted: its envelope is malformed, or its data does not
    satisfy the JSON Schema declared for its type (422 at the API, dead-lettered on AMQP)."""

    def __init__(self, message: str, *, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class Conflict(WarrenError):
    """The request contradicts what is stored."""


class IdempotencyConflict(Conflict):
    """The idempotency key (or instance id) was used for a different request."""


class InvalidState(Conflict):
    """The instance's status does not allow this operation (e.g. cancelling a finished one)."""


class MessageError(WarrenError):
    """A message on the wire cannot be understood: poison, never retried."""


class UnknownVersion(MessageError):
    """A payload (of an event, a command or a reply) whose version is newer than any this
    process has upcasters for: dead-lettered with this reason, never half-read."""


class StorageError(WarrenError):
    """The database failed; the operation may succeed when retried."""

    retryable = True


class DatabaseRefused(StorageError):
    """The database refused what WARREN_DATABASE_URL says (the login, the database's name). A
    message in hand is retried all the same (credentials may be rotating); a starting process
    stops at once (`storage.database.patiently`)."""


class BrokerError(WarrenError):
    """The broker failed; the operation may succeed when retried."""

    retryable = True


class UnroutableMessage(BrokerError):
    """A mandatory publish was returned: no queue is bound for its routing key."""
