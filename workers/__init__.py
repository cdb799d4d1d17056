"""Warren workers: write step handlers, run them as a pool.

    from workers import StepContext, StepFailed, Worker

    worker = Worker("payments")

    @worker.handler("reserve_credit", pool="payments")
    async def reserve_credit(ctx: StepContext) -> dict[str, int]:
        ...

This package never imports the engine; it shares only the wire format and the storage plumbing.
"""

from orchestrator.messaging.envelope import Phase
from workers.app import Handler, HandlerError, NoSession, StepContext, StepFailed, Worker

# Grouped by what a user does with the names, so not alphabetical as a whole.
__all__ = [  # noqa: RUF022
    # writing handlers
    "Handler",
    "Phase",
    "StepContext",
    "Worker",
    # errors
    "HandlerError",
    "NoSession",
    "StepFailed",
]
