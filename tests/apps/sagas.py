"""Saga definitions used by the registration tests."""

from orchestrator.definitions import Compensation, RetryPolicy, Saga, Step

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

# `hold` runs on a pool nobody serves: its only attempt always times out.
timing_out = Saga(
    name="timing-out",
    version=1,
    steps=[
        Step(name="take", pool="fast", compensation=Compensation(command="give_back")),
        Step(
            name="hold",
            pool="nobody",
            retry=RetryPolicy(max_attempts=1),
            timeout_seconds=0.5,
            compensation=Compensation(command="release", pool="fast"),
        ),
    ],
)

# Its second step runs on a pool nobody serves: the deadline stops the saga at 1 s; the step in
# flight is waited for until its own timeout, then the first step is undone.
deadlined = Saga(
    name="deadlined",
    version=1,
    deadline_seconds=1.0,
    steps=[
        Step(name="take", pool="fast", compensation=Compensation(command="give_back")),
        Step(name="hold", pool="nobody", timeout_seconds=2.0, retry=RetryPolicy(max_attempts=5)),
    ],
)

# The second step waits 0.3 s after the first.
delayed = Saga(
    name="delayed",
    version=1,
    steps=[
        Step(name="take", pool="fast"),
        Step(name="release", pool="fast", delay_seconds=0.3),
    ],
)

# Deployed with tests.apps.fast:worker, which has no handler for `missing` (a step) nor for
# `put_back` (the compensation of `take`): a forgotten handler, forward and backward.
forgotten = Saga(
    name="forgotten",
    version=1,
    steps=[
        Step(name="take", pool="fast", compensation=Compensation(command="put_back")),
        Step(name="missing", pool="fast"),
    ],
)
