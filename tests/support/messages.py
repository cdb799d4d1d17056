"""Envelopes built by hand, as a worker (or a stale copy of one) would send them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from orchestrator.messaging.envelope import Phase, Reply, ReplyPayload, new_message_id, utcnow


def success_reply(
    *,
    saga: str,
    instance_id: UUID | str,
    step: str,
    attempt: int = 1,
    seq: int = 2,
    result: Any = None,
) -> Reply:
    """A successful forward reply for `step`'s `attempt`."""
    instance = UUID(str(instance_id))
    return Reply(
        id=new_message_id(),
        saga=saga,
        saga_version=1,
        instance_id=instance,
        step=step,
        phase=Phase.FORWARD,
        command=step,
        attempt=attempt,
        seq=seq,
        correlation_id=instance,
        timestamp=utcnow(),
        payload=ReplyPayload(ok=True, result=result),
    )
