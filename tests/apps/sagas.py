"""Saga definitions used by the registration tests."""

from orchestrator.definitions import Compensation, Saga, Step

refund = Saga(
    name="refund",
    version=1,
    steps=[
        Step(name="refund_card", pool="payments", compensation=Compensation(command="recharge"))
    ],
)

# The same (name, version) as `refund` with different content: must be refused.
refund_changed = Saga(
    name="refund",
    version=1,
    steps=[Step(name="refund_card", pool="payments", timeout_seconds=5)],
)

refund_v2 = Saga(name="refund", version=2, steps=[Step(name="refund_card", pool="billing")])

both = [refund, refund_v2]

not_a_saga = 42
