"""The orchestrator's built-in middlewares: what each handled message gets besides its
transition.

- Around each batch of replies and each timer fired (a `Batch`, through a chain of
  `orchestrator.observability.middleware`, composed once): `Metrics` counts what the committed
  transitions did (retries dispatched, sagas ended).
- Around each reply inside its batch's transaction (`observe_reply`, the `around` of its
  `Incoming`): its consumer span (in a batch; alone, the consumer opened it), its log fields
  and its payload line. The `saga.<event>` span of each transition is the shell's own
  (`orchestrator.service.transitions`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from orchestrator.messaging.consumer import message_span
from orchestrator.observability import logs, metrics
from orchestrator.observability.middleware import Next

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aio_pika.abc import AbstractIncomingMessage

    from orchestrator.engine import Transition
    from orchestrator.messaging.envelope import Reply
    from orchestrator.persistence.outbox import PendingRow

log = logging.getLogger("orchestrator.service.orchestrator")  # the lines keep their logger


@dataclass(frozen=True, kw_only=True, slots=True)
class Batch:
    """What an orchestrator handles in one transaction: replies that arrived together, or the
    next due timer (no replies)."""

    replies: list[tuple[Reply, AbstractIncomingMessage | None]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Handled:
    """What a batch did, once committed."""

    transitions: list[Transition] = field(default_factory=list)
    pending: list[PendingRow] = field(default_factory=list)
    found: bool = True
    """False when there was nothing to do (no timer was due)."""


NextBatch: TypeAlias = Next[Batch, Handled]


class Metrics:
    """Counts what the committed transitions did (`metrics.observe_transition`)."""

    async def __call__(self, batch: Batch, next: NextBatch, /) -> Handled:
        handled = await next(batch)
        for transition in handled.transitions:
            metrics.observe_transition(transition)
        return handled


@contextlib.contextmanager
def observe_reply(
    payloads: logs.PayloadLog, reply: Reply, message: AbstractIncomingMessage | None, queue: str
) -> Iterator[None]:
    """Around one reply's transition: its consumer span (in a batch), its log fields."""
    with (
        message_span(message, queue) if message else contextlib.nullcontext(),
        logs.bind(
            saga=reply.saga,
            instance_id=reply.instance_id,
            step=reply.step,
            phase=reply.phase.value,
            attempt=reply.attempt,
        ),
    ):
        payloads.log(log, "reply received", reply.payload)
        yield
