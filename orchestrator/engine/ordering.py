"""Ordering: a reply answers one dispatch, and says which.

Every command carries the seq of the history event that dispatched it, and its reply (a
worker's, or a child saga's end) carries that seq back. A reply naming the attempt in flight
but not that attempt's dispatch, or a seq the instance has not reached, answers nothing this
instance sent: it is recorded as ignored, with why, and changes nothing. Replies of earlier
attempts (a late success) are checked only against the instance's seq: their dispatch's seq
is in the history, not in the snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine.vocabulary import Phase

if TYPE_CHECKING:
    from orchestrator.engine.state import InstanceState, StepReply


def out_of_order(instance: InstanceState, reply: StepReply) -> str | None:
    """Why `reply` is not the answer to a dispatch of `instance`; None when it may be. A reply
    without a seq (None or 0: a sender that does not know it) is not checked."""
    if not reply.seq:
        return None
    if reply.seq > instance.seq:
        return f"its seq {reply.seq} is ahead of the instance's ({instance.seq})"
    state = instance.steps.get(reply.step)
    if state is None:
        return None  # a stray: ignored anyway
    if reply.phase is Phase.FORWARD:
        attempt, sent = state.attempt, state.dispatch_seq
    else:
        attempt, sent = state.compensation_attempt, state.compensation_dispatch_seq
    if sent and reply.attempt == attempt and reply.seq != sent:
        return f"attempt {attempt} was dispatched at seq {sent}, not {reply.seq}"
    return None
