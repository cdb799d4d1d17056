"""Warren workers: write step handlers, run them as a pool, test them with the harness.

    from workers import StepContext, StepFailed, Worker

    worker = Worker("payments")

    @worker.handler("reserve_credit", pool="payments")
    async def reserve_credit(ctx: StepContext) -> dict[str, int]:
        ...

A worker process never loads the engine's logic: it shares the wire format (which speaks the
engine's vocabulary) and the storage plumbing. Only the test harness (`workers.testing`) runs
the engine, and it imports it when a test runs a saga.
"""

from orchestrator.errors import EventInvalid, UnknownVersion
from orchestrator.messaging.cloudevents import CloudEvent
from orchestrator.messaging.envelope import Phase
from orchestrator.messaging.versions import upcaster
from workers.app import Handler, HandlerError, NoSession, StepContext, StepFailed, Worker
from workers.events import publish_event
from workers.middleware import HandlerCall, HandlerOutcome, Middleware, NextHandler
from workers.testing import SagaHarness

# Grouped by what a user does with the names, so not alphabetical as a whole.
__all__ = [  # noqa: RUF022
    # writing handlers
    "Handler",
    "Phase",
    "StepContext",
    "Worker",
    # events and their versions
    "CloudEvent",
    "publish_event",
    "upcaster",
    # middleware
    "HandlerCall",
    "HandlerOutcome",
    "Middleware",
    "NextHandler",
    # testing them
    "SagaHarness",
    # errors
    "EventInvalid",
    "HandlerError",
    "NoSession",
    "StepFailed",
    "UnknownVersion",
]
