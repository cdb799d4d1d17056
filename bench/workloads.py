"""The benchmark's workloads: which saga, which pools, which inputs, and how each should end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import order3, order_events, travel

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.messaging.cloudevents import CloudEvent


@dataclass(frozen=True)
class Workload:
    name: str
    module: str
    """Where the saga (`saga_attr`) and the worker app (`worker`) live."""
    saga_attr: str
    saga_name: str
    pools: tuple[str, ...]
    input: Callable[[int], dict[str, Any]]
    expected_status: Callable[[int], str]
    awaited_event: Callable[[int], tuple[str, CloudEvent]] | None = None
    """For a workload whose instances wait for an event: the correlation value instance n
    waits on, and the event the benchmark publishes for it (see bench/feed.py)."""
    event_first: Callable[[int], bool] | None = None
    """Whether instance n's event is published before it starts (else once it waits)."""

    @property
    def saga_ref(self) -> str:
        return f"{self.module}:{self.saga_attr}"

    @property
    def worker_ref(self) -> str:
        return f"{self.module}:worker"


WORKLOADS = {
    "order-3": Workload(
        "order-3",
        "bench.order3",
        "order3",
        order3.SAGA_NAME,
        order3.POOLS,
        order3.order_input,
        order3.expected_status,
    ),
    "travel": Workload(
        "travel",
        "bench.travel",
        "travel",
        travel.SAGA_NAME,
        travel.POOLS,
        travel.travel_input,
        travel.expected_status,
    ),
    "events": Workload(
        "events",
        "bench.order_events",
        "order_events",
        order_events.SAGA_NAME,
        order_events.POOLS,
        order_events.order_input,
        order_events.expected_status,
        order_events.awaited_event,
        order_events.event_first,
    ),
}
