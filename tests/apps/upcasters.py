"""Upcasters the events tests load in their processes (WARREN_UPCASTERS=tests.apps.upcasters):
version 1 of `payment.captured` said `order` and `cents`; version 2 says `order_id` and
`amount` (in units)."""

from __future__ import annotations

from typing import Any

from orchestrator import upcaster


@upcaster("payment.captured", from_version=1)
def captured_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {"order_id": data["order"], "amount": data["cents"] / 100}
