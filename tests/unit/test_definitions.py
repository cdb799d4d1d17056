"""The definition DSL: validation when built, JSON round trip, content hash, retry delays."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest

from orchestrator.definitions import (
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_STEP_RETRY,
    Case,
    Choice,
    Compensation,
    Emit,
    RetryPolicy,
    Saga,
    Step,
    Trigger,
    WaitFor,
    field,
)
from orchestrator.errors import DefinitionError, WarrenError


def saga(*steps: Step, **fields: Any) -> Saga:
    """A valid saga around `steps` (one plain step when none given); `fields` override."""
    values: dict[str, Any] = {
        "name": "orders",
        "version": 1,
        "steps": steps or (Step(name="reserve_credit", pool="payments"),),
    }
    values.update(fields)
    return Saga(**values)


def full_saga() -> Saga:
    """A definition that sets every field, for round trips and hashes."""
    return Saga(
        name="place_order",
        version=3,
        description="Reserve credit, ship, then bill.",
        input_schema={
            "type": "object",
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order_id"],
        },
        steps=(
            Step(
                name="reserve_credit",
                pool="payments",
                command="credit.reserve",
                compensation=Compensation(
                    command="credit.release",
                    pool="payments-slow",
                    retry=RetryPolicy(max_attempts=20, initial_interval_seconds=0.5),
                    timeout_seconds=12.5,
                ),
                retry=RetryPolicy(
                    max_attempts=5,
                    initial_interval_seconds=0.25,
                    backoff_coefficient=3.0,
                    max_interval_seconds=10.0,
                    non_retryable_errors=("InsufficientFunds", "CardDeclined"),
                ),
                timeout_seconds=30.0,
            ),
            Step(
                name="ship", pool="shipping", compensation=Compensation(command="cancel_shipment")
            ),
            Step(name="bill", pool="payments"),
        ),
    )


# ---- validation ---------------------------------------------------------------------------------


def test_a_valid_saga_builds_and_stores_its_steps_as_a_tuple() -> None:
    built = Saga(
        name="orders",
        version=1,
        steps=[Step(name="a", pool="p"), Step(name="b", pool="p")],
    )
    assert isinstance(built.steps, tuple)
    assert [s.name for s in built.steps] == ["a", "b"]


def test_a_full_saga_is_valid() -> None:
    built = full_saga()
    assert built.pools == frozenset({"payments", "payments-slow", "shipping"})


@pytest.mark.parametrize(
    "name",
    ["Orders", "1orders", "_orders", "", "orders!", "order saga", "a" * 64, "ördre"],
)
def test_bad_saga_name_is_rejected(name: str) -> None:
    with pytest.raises(DefinitionError, match=r"saga name .* must be lowercase letters") as info:
        saga(name=name)
    assert repr(name) in info.value.message


@pytest.mark.parametrize("name", ["o", "orders", "orders.v2", "place-order_1", "a" * 63])
def test_good_saga_names_are_accepted(name: str) -> None:
    assert saga(name=name).name == name


@pytest.mark.parametrize("version", [0, -1, -100])
def test_version_below_one_is_rejected(version: int) -> None:
    with pytest.raises(
        DefinitionError, match=rf"saga 'orders': version must be 1 or more, got {version}"
    ):
        saga(version=version)


@pytest.mark.parametrize("steps", [(), []])
def test_a_saga_without_steps_is_rejected(steps: Any) -> None:
    with pytest.raises(
        DefinitionError, match=r"saga 'orders' has no steps; give it at least one Step"
    ):
        Saga(name="orders", version=1, steps=steps)


@pytest.mark.parametrize("name", ["ReserveCredit", "reserve credit", "1st", "", "x" * 64])
def test_bad_step_name_is_rejected(name: str) -> None:
    with pytest.raises(
        DefinitionError, match=r"step names must look like 'reserve_credit'"
    ) as info:
        saga(Step(name=name, pool="payments"))
    assert f"step {name!r}" in info.value.message


def test_duplicate_step_names_are_rejected() -> None:
    with pytest.raises(DefinitionError, match=r"saga 'orders': step name 'charge' is used twice"):
        saga(
            Step(name="charge", pool="payments"),
            Step(name="ship", pool="shipping"),
            Step(name="charge", pool="billing"),
        )


@pytest.mark.parametrize("pool", ["Payments", "", "pay ments", "9payments", "p" * 64])
def test_bad_step_pool_is_rejected(pool: str) -> None:
    with pytest.raises(DefinitionError, match=r"pool .* must look like 'payments'") as info:
        saga(Step(name="charge", pool=pool))
    message = info.value.message
    assert "step 'charge'" in message
    assert repr(pool) in message


@pytest.mark.parametrize("command", ["", "   ", "\t\n"])
def test_an_empty_step_command_is_rejected(command: str) -> None:
    with pytest.raises(DefinitionError, match=r"step 'charge': command is empty; omit it"):
        saga(Step(name="charge", pool="payments", command=command))


@pytest.mark.parametrize("command", ["", "  ", "\n"])
def test_a_compensation_with_an_empty_command_is_rejected(command: str) -> None:
    with pytest.raises(DefinitionError, match=r"step 'charge': the compensation names no command"):
        saga(Step(name="charge", pool="payments", compensation=Compensation(command=command)))


def test_a_compensation_with_a_bad_pool_is_rejected() -> None:
    step = Step(
        name="charge", pool="payments", compensation=Compensation(command="refund", pool="Refunds")
    )
    with pytest.raises(
        DefinitionError, match=r"step 'charge': pool 'Refunds' must look like 'payments'"
    ):
        saga(step)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (RetryPolicy(max_attempts=0), "retry.max_attempts must be at least 1"),
        (RetryPolicy(max_attempts=-3), "retry.max_attempts must be at least 1"),
        (RetryPolicy(initial_interval_seconds=-1.0), "retry intervals cannot be negative"),
        (RetryPolicy(max_interval_seconds=-0.1), "retry intervals cannot be negative"),
        (RetryPolicy(backoff_coefficient=0.5), "retry.backoff_coefficient must be at least 1"),
        (RetryPolicy(backoff_coefficient=0.0), "retry.backoff_coefficient must be at least 1"),
    ],
)
def test_a_bad_step_retry_policy_is_rejected(policy: RetryPolicy, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        saga(Step(name="charge", pool="payments", retry=policy))
    assert info.value.message == f"saga 'orders', step 'charge': {message}"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (RetryPolicy(max_attempts=0), "retry.max_attempts must be at least 1"),
        (RetryPolicy(initial_interval_seconds=-5.0), "retry intervals cannot be negative"),
        (RetryPolicy(backoff_coefficient=0.99), "retry.backoff_coefficient must be at least 1"),
    ],
)
def test_a_bad_compensation_retry_policy_is_rejected(policy: RetryPolicy, message: str) -> None:
    step = Step(
        name="charge", pool="payments", compensation=Compensation(command="refund", retry=policy)
    )
    with pytest.raises(DefinitionError) as info:
        saga(step)
    assert info.value.message == f"saga 'orders', step 'charge' (compensation): {message}"


def test_edge_retry_policies_are_accepted() -> None:
    policy = RetryPolicy(
        max_attempts=1,
        initial_interval_seconds=0.0,
        backoff_coefficient=1.0,
        max_interval_seconds=0.0,
    )
    built = saga(Step(name="charge", pool="payments", retry=policy))
    assert built.step("charge").retry == policy


@pytest.mark.parametrize("timeout", [0.0, -1.0, -0.001])
def test_a_non_positive_step_timeout_is_rejected(timeout: float) -> None:
    with pytest.raises(DefinitionError, match=r"step 'charge': timeout_seconds must be positive"):
        saga(Step(name="charge", pool="payments", timeout_seconds=timeout))


@pytest.mark.parametrize("timeout", [0.0, -2.5])
def test_a_non_positive_compensation_timeout_is_rejected(timeout: float) -> None:
    step = Step(
        name="charge",
        pool="payments",
        compensation=Compensation(command="refund", timeout_seconds=timeout),
    )
    with pytest.raises(DefinitionError, match=r"timeout_seconds must be positive") as info:
        saga(step)
    assert "step 'charge'" in info.value.message
    assert "compensation" in info.value.message


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nope"},
        {"type": 5},
        {"properties": {"a": {"type": "strin"}}},
        {"required": "order_id"},
        {"minLength": -1},
    ],
)
def test_an_invalid_input_schema_is_rejected(schema: dict[str, Any]) -> None:
    with pytest.raises(
        DefinitionError, match=r"saga 'orders': input_schema is not a valid JSON Schema: "
    ) as info:
        saga(input_schema=schema)
    assert isinstance(info.value.__cause__, Exception)  # the jsonschema error is chained


@pytest.mark.parametrize(
    "schema",
    [
        {},
        {"type": "object"},
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
    ],
)
def test_a_valid_input_schema_is_accepted(schema: dict[str, Any]) -> None:
    assert saga(input_schema=schema).input_schema == schema


def test_definition_error_is_a_non_retryable_warren_error() -> None:
    with pytest.raises(DefinitionError) as info:
        saga(version=0)
    assert isinstance(info.value, WarrenError)
    assert info.value.retryable is False


def test_validation_reports_the_first_problem_in_step_order() -> None:
    with pytest.raises(DefinitionError, match=r"step 'first': timeout_seconds must be positive"):
        saga(
            Step(name="first", pool="p", timeout_seconds=0),
            Step(name="second", pool="P"),
        )


# ---- accessors ----------------------------------------------------------------------------------


def test_step_lookup_and_derived_names() -> None:
    built = full_saga()
    reserve = built.step("reserve_credit")
    ship = built.step("ship")
    assert reserve.command_name == "credit.reserve"
    assert ship.command_name == "ship"  # the step name when no command is given
    assert reserve.compensation_pool == "payments-slow"
    assert ship.compensation_pool == "shipping"  # the step's own pool when not given


def test_looking_up_an_unknown_step_raises() -> None:
    with pytest.raises(DefinitionError, match=r"saga 'place_order' has no step 'refund'"):
        full_saga().step("refund")


def test_defaults() -> None:
    step = Step(name="a", pool="p")
    assert step.retry == DEFAULT_STEP_RETRY
    assert RetryPolicy(max_attempts=3) == DEFAULT_STEP_RETRY
    assert Compensation(command="undo").retry == DEFAULT_COMPENSATION_RETRY
    assert DEFAULT_COMPENSATION_RETRY.max_elapsed_seconds == 900.0  # 15 minutes of trying
    delays = [DEFAULT_COMPENSATION_RETRY.delay_before(n) for n in range(2, 13)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0, 30.0]


# ---- JSON round trip ----------------------------------------------------------------------------


def test_round_trip_through_json_gives_an_equal_saga() -> None:
    original = full_saga()
    data = original.to_json()
    restored = Saga.from_json(data)
    assert restored == original
    assert Saga.from_json(data.decode()) == original
    assert restored.to_json() == data
    assert restored.content_hash == original.content_hash


@pytest.mark.parametrize(
    "built",
    [
        saga(),
        saga(Step(name="a", pool="p", compensation=Compensation(command="undo_a"))),
        saga(input_schema={}, description="x"),
    ],
)
def test_round_trip_of_small_sagas(built: Saga) -> None:
    assert Saga.from_json(built.to_json()) == built


def test_stored_json_is_plain_data_with_a_kind_tag() -> None:
    stored = msgspec.json.decode(full_saga().to_json())
    assert isinstance(stored, dict)
    assert [s["kind"] for s in stored["steps"]] == ["step", "step", "step"]
    assert stored["steps"][0]["retry"]["non_retryable_errors"] == [
        "InsufficientFunds",
        "CardDeclined",
    ]


def test_from_json_validates_the_stored_definition() -> None:
    data = msgspec.json.decode(saga().to_json())
    data["version"] = 0
    with pytest.raises(DefinitionError, match=r"version"):  # bounded in the type: >= 1
        Saga.from_json(msgspec.json.encode(data))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(unknown_field=1),
        lambda d: d.update(version="one"),
        lambda d: d["steps"][0].update(kind="parallel"),
        lambda d: d["steps"][0].update(timeout="soon"),
        lambda d: d.pop("steps"),
    ],
)
def test_from_json_rejects_malformed_stored_definitions(mutate: Any) -> None:
    data = msgspec.json.decode(saga().to_json())
    mutate(data)
    with pytest.raises(DefinitionError, match="stored definition is not valid"):
        Saga.from_json(msgspec.json.encode(data))


@pytest.mark.parametrize("data", [b"{not json", b"", "[1, 2", b"\xff\xfe"])
def test_from_json_rejects_text_that_is_not_json(data: bytes | str) -> None:
    with pytest.raises(DefinitionError, match="stored definition is not valid") as info:
        Saga.from_json(data)
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


# ---- content hash -------------------------------------------------------------------------------


def test_content_hash_is_a_stable_sha256() -> None:
    first = full_saga().content_hash
    assert first == full_saga().content_hash
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_content_hash_ignores_dict_key_order_in_the_input_schema() -> None:
    a = saga(input_schema={"type": "object", "required": ["a"], "properties": {"a": {}, "b": {}}})
    b = saga(input_schema={"properties": {"b": {}, "a": {}}, "required": ["a"], "type": "object"})
    assert a.content_hash == b.content_hash


@pytest.mark.parametrize(
    "changed",
    [
        saga(version=2),
        saga(name="orders2"),
        saga(description="now with a description"),
        saga(input_schema={"type": "object"}),
        saga(Step(name="reserve_credit", pool="payments2")),
        saga(Step(name="reserve_credit", pool="payments", command="reserve")),
        saga(Step(name="reserve_credit", pool="payments", timeout_seconds=5)),
        saga(Step(name="reserve_credit", pool="payments", retry=RetryPolicy(max_attempts=4))),
        saga(
            Step(
                name="reserve_credit",
                pool="payments",
                retry=RetryPolicy(non_retryable_errors=("Declined",)),
            )
        ),
        saga(
            Step(
                name="reserve_credit", pool="payments", compensation=Compensation(command="release")
            )
        ),
        saga(Step(name="reserve_credit", pool="payments"), Step(name="ship", pool="shipping")),
    ],
)
def test_content_hash_changes_when_content_changes(changed: Saga) -> None:
    assert changed.content_hash != saga().content_hash


def test_content_hash_depends_on_step_order() -> None:
    a, b = Step(name="a", pool="p"), Step(name="b", pool="p")
    assert saga(a, b).content_hash != saga(b, a).content_hash


# ---- retry delays -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [
        (-1, 0.0),
        (0, 0.0),
        (1, 0.0),
        (2, 1.0),
        (3, 2.0),
        (4, 4.0),
        (5, 8.0),
        (7, 32.0),
        (8, 60.0),
        (30, 60.0),
    ],
)
def test_default_step_retry_delays(attempt: int, delay: float) -> None:
    assert RetryPolicy().delay_before(attempt) == delay


def test_delay_before_with_custom_policy() -> None:
    policy = RetryPolicy(
        initial_interval_seconds=0.5, backoff_coefficient=3.0, max_interval_seconds=10.0
    )
    assert [policy.delay_before(n) for n in range(1, 7)] == [0.0, 0.5, 1.5, 4.5, 10.0, 10.0]


def test_delay_before_with_constant_and_zero_intervals() -> None:
    constant = RetryPolicy(initial_interval_seconds=5.0, backoff_coefficient=1.0)
    assert [constant.delay_before(n) for n in range(2, 6)] == [5.0, 5.0, 5.0, 5.0]
    zero = RetryPolicy(initial_interval_seconds=0.0)
    assert all(zero.delay_before(n) == 0.0 for n in range(1, 20))


def test_delay_before_is_a_float() -> None:
    policy = RetryPolicy(
        initial_interval_seconds=2, backoff_coefficient=2, max_interval_seconds=100
    )
    delay = policy.delay_before(3)
    assert type(delay) is float
    assert delay == 4.0


def test_delay_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(max_attempts=500, initial_interval_seconds=1.5, max_interval_seconds=45.0)
    assert max(policy.delay_before(n) for n in range(1, 501)) == 45.0


def test_delay_before_stays_capped_for_very_large_attempts() -> None:
    policy = RetryPolicy(
        max_attempts=10_000, initial_interval_seconds=1.0, max_interval_seconds=60.0
    )
    built = saga(Step(name="a", pool="p", retry=policy))  # a valid definition
    assert built.step("a").retry == policy
    assert policy.delay_before(1100) == 60.0  # 2.0 ** 1098 overflows a float
    assert policy.delay_before(10_000) == 60.0
    steep = RetryPolicy(
        initial_interval_seconds=0.5, backoff_coefficient=1e6, max_interval_seconds=9
    )
    assert steep.delay_before(200) == 9.0


# ---- non-finite numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        Step(name="a", pool="p", timeout_seconds=math.inf),
        Step(name="a", pool="p", timeout_seconds=math.nan),
        Step(name="a", pool="p", retry=RetryPolicy(initial_interval_seconds=math.nan)),
        Step(name="a", pool="p", retry=RetryPolicy(backoff_coefficient=math.nan)),
        Step(name="a", pool="p", retry=RetryPolicy(max_interval_seconds=math.inf)),
        Step(name="a", pool="p", retry=RetryPolicy(backoff_coefficient=math.inf)),
        Step(name="a", pool="p", retry=RetryPolicy(initial_interval_seconds=-math.inf)),
        Step(name="a", pool="p", compensation=Compensation(command="u", timeout_seconds=math.inf)),
        Step(
            name="a",
            pool="p",
            compensation=Compensation(
                command="u", retry=RetryPolicy(max_interval_seconds=math.nan)
            ),
        ),
    ],
)
def test_non_finite_numbers_are_rejected(step: Step) -> None:
    # JSON cannot carry them: they would be stored as null and read back wrong, or not at all
    with pytest.raises(DefinitionError, match="finite") as info:
        saga(step)
    assert "step 'a'" in info.value.message


# ---- events: WaitFor, Emit, Trigger, event schemas ------------------------------------------


def _with(*nodes: Any, **saga: Any) -> Saga:
    return Saga(name="evented", version=1, steps=[Step(name="a", pool="p"), *nodes], **saga)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (WaitFor(name="w"), "either event="),
        (WaitFor(name="w", event="x.y", signal="s"), "either event="),
        (WaitFor(name="w", event="Bad Type"), "must look like 'payment.captured'"),
        (WaitFor(name="w", signal="Bad Name"), "must look like 'approved'"),
        (WaitFor(name="w", event="x.y", correlate="data.id"), "go together"),
        (
            WaitFor(name="w", signal="s", correlate="data.id", equals="input.id"),
            "no correlate=",
        ),
        (WaitFor(name="w", event="x.y", correlate="input.id", equals="input.id"), "must start"),
        (WaitFor(name="w", event="x.y", on_timeout=[]), "needs timeout_seconds"),
        (
            WaitFor(name="w", event="x.y", emits=[Emit(type="a.b", on="completed")]),
            "no on=",
        ),
    ],
)
def test_a_wait_that_cannot_work_is_refused(node: WaitFor, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        _with(node)


def test_a_saga_emit_says_when_and_a_trigger_reads_the_event() -> None:
    with pytest.raises(DefinitionError, match="says when"):
        _with(emits=[Emit(type="order.done")])
    with pytest.raises(DefinitionError, match="must start"):
        _with(triggers=[Trigger(event="order.placed", key="input.order_id")])
    with pytest.raises(DefinitionError, match="must start"):
        _with(triggers=[Trigger(event="order.placed", when=field("input.x") == 1)])
    with pytest.raises(DefinitionError, match="not a valid JSON Schema"):
        _with(event_schemas={"order.placed": {"type": "nonsense"}})
    saga = _with(
        WaitFor(
            name="paid",
            event="payment.captured",
            correlate="data.order_id",
            equals="input.order_id",
            timeout_seconds=60,
            on_timeout=[Step(name="remind", pool="mail")],
        ),
        emits=[Emit(type="order.done", on="completed", data={"id": "input.order_id"})],
        triggers=[Trigger(event="order.placed", when=field("data.total") > 0, key="data.id")],
        event_schemas={"payment.captured": {"type": "object"}},
    )
    assert Saga.from_json(saga.to_json()) == saga
    assert [t.name for t in saga.tasks] == ["a", "remind"]


def test_a_definition_without_events_keeps_its_hash() -> None:
    """The event fields, at their defaults, are not in the stored form: a definition
    registered before them is the same definition."""
    stored = json.loads(_with().to_json())
    assert "emits" not in stored
    assert "triggers" not in stored
    assert "event_schemas" not in stored
    assert "emits" not in stored["steps"][0]


def test_a_trigger_condition_reads_the_event_and_a_choice_condition_the_saga() -> None:
    """`field()` takes a path from either root set; the definition checks which one applies."""
    take = Step(name="take", pool="fast")
    on_courier = Trigger(event="order.placed", when=field("data.shipping") == "courier")
    triggered = Saga(name="triggered", version=1, steps=[take], triggers=[on_courier])
    assert triggered.triggers[0].when is on_courier.when

    by_event = Case(name="courier", when=field("data.shipping") == "courier", steps=[take])
    with pytest.raises(DefinitionError, match="must start with one of"):
        Saga(name="chosen", version=1, steps=[Choice(name="how", cases=[by_event])])
    with pytest.raises(DefinitionError, match="must start with one of"):
        Saga(
            name="triggered",
            version=1,
            steps=[take],
            triggers=[Trigger(event="order.placed", when=field("input.shipping") == "courier")],
        )
