"""Saga definitions as data: frozen, keyword-only value objects that serialise to JSON.

A definition is built in Python (`Saga(...)`), validated as it is built, stored in Postgres as
JSON with a content hash, and read back into the very same objects. Nothing in it is code:
no callables, no pickles, no `eval`. Every node carries a `kind` tag so that later node kinds
(parallel groups, branches, waits) can join `Step` without changing what is stored today.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

import jsonschema
import msgspec

from orchestrator.errors import DefinitionError

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How often, and how far apart, a failed attempt is tried again."""

    max_attempts: int = 3
    """Attempts in all, the first included. 1 means never retry."""
    initial_interval_seconds: float = 1.0
    """Delay before the second attempt."""
    backoff_coefficient: float = 2.0
    """Each further delay is the previous one times this."""
    max_interval_seconds: float = 60.0
    """No delay grows beyond this."""
    non_retryable_errors: tuple[str, ...] = ()
    """Error type names (as the worker reports them) that fail the step at once."""
    max_elapsed_seconds: float | None = None
    """Stop retrying once the next attempt would start this long after the first one."""
    jitter: float = 0.0
    """Spread each delay by up to this fraction either way (0.2: ±20%), so that many instances
    failing together do not retry together. Deterministic per instance, step and attempt."""

    def delay_before(self, attempt: int, *, salt: str = "") -> float:
        """Seconds to wait before `attempt` (2 for the first retry); `salt` picks the jitter."""
        if attempt <= 1:
            return 0.0
        try:
            delay = self.initial_interval_seconds * self.backoff_coefficient ** (attempt - 2)
        except OverflowError:  # a very long retry: far past the cap anyway
            delay = self.max_interval_seconds
        delay = min(delay, self.max_interval_seconds)
        if self.jitter:
            digest = hashlib.sha256(f"{salt}:{attempt}".encode()).digest()
            spread = int.from_bytes(digest[:8]) / 2**64 * 2 - 1  # in [-1, 1)
            delay = min(delay * (1 + self.jitter * spread), self.max_interval_seconds)
        return float(delay)

    def _check(self, where: str) -> None:
        numbers = (
            self.initial_interval_seconds,
            self.max_interval_seconds,
            self.backoff_coefficient,
            self.jitter,
        )
        if not all(math.isfinite(n) for n in numbers):
            raise DefinitionError(
                f"{where}: retry intervals and coefficient must be finite numbers"
            )
        if self.max_attempts < 1:
            raise DefinitionError(f"{where}: retry.max_attempts must be at least 1")
        if self.initial_interval_seconds < 0 or self.max_interval_seconds < 0:
            raise DefinitionError(f"{where}: retry intervals cannot be negative")
        if self.backoff_coefficient < 1:
            raise DefinitionError(f"{where}: retry.backoff_coefficient must be at least 1")
        if self.max_elapsed_seconds is not None and not (
            math.isfinite(self.max_elapsed_seconds) and self.max_elapsed_seconds > 0
        ):
            raise DefinitionError(f"{where}: retry.max_elapsed_seconds must be positive and finite")
        if not 0 <= self.jitter <= 1:
            raise DefinitionError(f"{where}: retry.jitter must be between 0 and 1")


DEFAULT_STEP_RETRY = RetryPolicy()
# A compensation must eventually succeed: it keeps trying, every 30 s at most, for 15 minutes.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=10_000,
    initial_interval_seconds=1.0,
    backoff_coefficient=2.0,
    max_interval_seconds=30.0,
    max_elapsed_seconds=900.0,
)


class Compensation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The command that undoes a completed step."""

    command: str
    """Handler name on the worker side, e.g. ``release_credit``."""
    pool: str | None = None
    """Worker pool that runs it; the step's own pool when not given."""
    retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout_seconds: float | None = None


class Step(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="kind",
    tag="step",
):
    """One forward action of a saga, run as a command by a worker pool."""

    name: str
    """Unique within the saga; also the handler name unless `command` is given."""
    pool: str
    """Worker pool (one RabbitMQ queue) that runs the command."""
    command: str | None = None
    compensation: Compensation | None = None
    retry: RetryPolicy = DEFAULT_STEP_RETRY
    timeout_seconds: float | None = None
    """Start-to-close time of one attempt; past it the attempt counts as failed."""
    delay_seconds: float | None = None
    """Run no earlier than this long after the step before it completed."""

    @property
    def command_name(self) -> str:
        return self.command or self.name

    @property
    def compensation_pool(self) -> str:
        assert self.compensation is not None
        return self.compensation.pool or self.pool


# The node kinds a saga is built from. Parallel groups, branches and waits join this union.
Node = Step


class Saga(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A versioned saga definition: validated when built, stored as data."""

    name: str
    version: int
    steps: Sequence[Node]
    """The nodes in order (a list is accepted and stored as a tuple)."""
    input_schema: dict[str, Any] | None = None
    """JSON Schema (2020-12) the input must satisfy to start an instance."""
    description: str = ""
    deadline_seconds: float | None = None
    """Past this long after its start, a still-running instance stops and compensates."""

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple):  # accept any sequence; store a tuple
            msgspec.structs.force_setattr(self, "steps", tuple(self.steps))
        _validate(self)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise DefinitionError(f"saga {self.name!r} has no step {name!r}")

    def to_json(self) -> bytes:
        return msgspec.json.encode(self, order="sorted")

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    @property
    def pools(self) -> frozenset[str]:
        pools = {s.pool for s in self.steps}
        pools.update(s.compensation_pool for s in self.steps if s.compensation is not None)
        return frozenset(pools)

    @classmethod
    def from_json(cls, data: bytes | str) -> Saga:
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise DefinitionError(f"stored definition is not valid: {exc}") from exc


def _validate(saga: Saga) -> None:
    if not _NAME.match(saga.name):
        raise DefinitionError(
            f"saga name {saga.name!r} must be lowercase letters, digits, '_', '.', '-' "
            "and start with a letter"
        )
    if saga.version < 1:
        raise DefinitionError(f"saga {saga.name!r}: version must be 1 or more, got {saga.version}")
    if not saga.steps:
        raise DefinitionError(f"saga {saga.name!r} has no steps; give it at least one Step")
    seen: set[str] = set()
    for step in saga.steps:
        if step.name in seen:
            raise DefinitionError(f"saga {saga.name!r}: step name {step.name!r} is used twice")
        seen.add(step.name)
        _validate_step(step, f"saga {saga.name!r}, step {step.name!r}")
    _check_duration(saga.deadline_seconds, f"saga {saga.name!r}", "deadline_seconds")
    if saga.input_schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(saga.input_schema)
        except jsonschema.SchemaError as exc:
            raise DefinitionError(
                f"saga {saga.name!r}: input_schema is not a valid JSON Schema: {exc.message}"
            ) from exc


def _validate_step(step: Step, where: str) -> None:
    if not _NAME.match(step.name):
        raise DefinitionError(f"{where}: step names must look like 'reserve_credit'")
    _check_pool(step.pool, where)
    if step.command is not None and not step.command.strip():
        raise DefinitionError(f"{where}: command is empty; omit it to use the step name")
    step.retry._check(where)
    _check_timeout(step.timeout_seconds, where)
    _check_duration(step.delay_seconds, where, "delay_seconds")
    comp = step.compensation
    if comp is not None:
        if not comp.command.strip():
            raise DefinitionError(f"{where}: the compensation names no command")
        if comp.pool is not None:
            _check_pool(comp.pool, where)
        comp.retry._check(f"{where} (compensation)")
        _check_timeout(comp.timeout_seconds, f"{where} (compensation)")


def _check_duration(value: float | None, where: str, field: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise DefinitionError(f"{where}: {field} must be positive and finite")


def _check_timeout(timeout: float | None, where: str) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise DefinitionError(f"{where}: timeout_seconds must be positive and finite")


def _check_pool(pool: str, where: str) -> None:
    if not _NAME.match(pool):
        raise DefinitionError(f"{where}: pool {pool!r} must look like 'payments'")
