"""The chaos run's worker app: the order example's handlers and the travel example's in one
app. Each worker process (one per role) serves an order pool and a travel pool, so the travel
saga's workers meet every fault the order saga's do, and the run has no more processes."""

from __future__ import annotations

from examples.orders.workers import worker as orders
from examples.travel.workers import worker as travel
from workers import Worker

worker = Worker("chaos")
for app in (orders, travel):
    for spec in app.handlers:
        worker.handler(spec.command, pool=spec.pool, transactional=spec.transactional)(spec.fn)
    for hook in app.startup_hooks:
        worker.on_startup(hook)
