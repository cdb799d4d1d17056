"""A worker for the `fast` pool of tests.apps.sagas:timing_out: every command succeeds."""

from __future__ import annotations

from workers import StepContext, Worker

worker = Worker("fast")


@worker.handler("take", pool="fast", transactional=False)
@worker.handler("give_back", pool="fast", transactional=False)
@worker.handler("release", pool="fast", transactional=False)
async def succeed(ctx: StepContext) -> dict[str, str]:
    return {"done": ctx.command}


# The deploy that brings the compensation tests.apps.sagas:forgotten lacked.
fixed = Worker("fast-fixed")


@fixed.handler("take", pool="fast", transactional=False)
@fixed.handler("put_back", pool="fast", transactional=False)
async def succeed_again(ctx: StepContext) -> dict[str, str]:
    return {"done": ctx.command}
