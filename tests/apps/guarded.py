"""The example order saga's handlers behind two middlewares of a user's: one refuses the
commands of a blocked tenant, one counts handler calls in a Prometheus counter of its own."""

from __future__ import annotations

from prometheus_client import Counter

from examples.orders.workers import worker as orders
from workers import HandlerCall, HandlerOutcome, NextHandler, StepFailed, Worker

calls = Counter(
    "guarded_handler_calls", "Handler calls, by command and outcome.", ["command", "outcome"]
)


class Tenants:
    """Refuses every command of a blocked tenant (the order id's prefix): the step fails for
    good, no handler runs."""

    async def __call__(self, call: HandlerCall, next: NextHandler) -> HandlerOutcome:
        tenant = call.ctx.input["order_id"].split("-")[0]
        if tenant == "BLOCKED":
            raise StepFailed(f"tenant {tenant!r} may not order", type="TenantRefused")
        return await next(call)


async def count(call: HandlerCall, next: NextHandler) -> HandlerOutcome:
    outcome = await next(call)
    calls.labels(call.ctx.command, outcome.label).inc()
    return outcome


worker = Worker("guarded", middleware=[Tenants()])
worker.middleware(count)  # inside Tenants: refused calls never reach it
for spec in orders.handlers:
    worker.handler(spec.command, pool=spec.pool, transactional=spec.transactional)(spec.fn)
for hook in orders.startup_hooks:
    worker.on_startup(hook)
