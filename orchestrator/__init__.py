"""Warren: saga orchestration on RabbitMQ and Postgres, every effect exactly once.

Define sagas with the DSL below; run the processes with the ``warren`` command.
Importing this package loads the DSL only: the engine and the servers load on demand.
"""

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step
from orchestrator.errors import (
    DefinitionError,
    InputInvalid,
    NotFound,
    RegistrationConflict,
    WarrenError,
)

__all__ = [
    # defining sagas
    "Compensation",
    # errors
    "DefinitionError",
    "InputInvalid",
    "NotFound",
    "RegistrationConflict",
    "RetryPolicy",
    "Saga",
    "Step",
    "WarrenError",
]
