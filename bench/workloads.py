"""The benchmark's workloads: which saga, which pools, which inputs, and how each should end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import order3, travel

if TYPE_CHECKING:
    from collections.abc import Callable


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
}
