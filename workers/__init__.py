"""Warren workers: write step handlers, run them as a pool.

    from workers import StepContext, StepFailed, Worker

    worker = Worker("payments")

    @worker.handler("reserve_credit", pool="payments")
    async def reserve_credit(ctx: StepContext) -> dict[str, int]:
        ...

This package never imports the engine; it shares only the wire format and the storage plumbing.
"""

from workers.app import Handler, HandlerError, StepContext, StepFailed, Worker
from workers.testing import SagaHarness

__all__ = ["Handler", "HandlerError", "SagaHarness", "StepContext", "StepFailed", "Worker"]
