"""The fault schedule: seeded, printed before the run, the same for the same arguments."""

from __future__ import annotations

import random
from enum import StrEnum

import msgspec


class Kind(StrEnum):
    KILL = "kill"  # SIGKILL an orchestrator or worker, restart it after a short pause
    PAUSE = "pause"  # SIGSTOP an orchestrator or worker, SIGCONT after a long pause
    RABBIT_CLOSE_CONNECTIONS = "rabbit_close_connections"  # rabbitmqctl close_all_connections
    RABBIT_RESTART = "rabbit_restart"  # stop the whole private node, start it again
    PG_RESTART = "pg_restart"  # pg_ctl restart -m fast|immediate
    PG_TERMINATE = "pg_terminate"  # pg_terminate_backend of Warren's backends
    AMQP_PROXY_RESET = "amqp_proxy_reset"
    AMQP_PROXY_BLACKHOLE = "amqp_proxy_blackhole"
    AMQP_PROXY_DELAY = "amqp_proxy_delay"
    PG_PROXY_RESET = "pg_proxy_reset"
    PG_PROXY_BLACKHOLE = "pg_proxy_blackhole"
    PG_PROXY_DELAY = "pg_proxy_delay"
    POISON = "poison"  # a garbage message published to a pool's or the orchestrators' queue


ALL_KINDS = tuple(Kind)

# How often each kind is drawn, relative to the others, once every kind has had its turn.
WEIGHTS = {
    Kind.KILL: 6,
    Kind.PAUSE: 2,
    Kind.RABBIT_CLOSE_CONNECTIONS: 2,
    Kind.RABBIT_RESTART: 1,
    Kind.PG_RESTART: 1,
    Kind.PG_TERMINATE: 2,
    Kind.AMQP_PROXY_RESET: 2,
    Kind.AMQP_PROXY_BLACKHOLE: 1,
    Kind.AMQP_PROXY_DELAY: 1,
    Kind.PG_PROXY_RESET: 2,
    Kind.PG_PROXY_BLACKHOLE: 1,
    Kind.PG_PROXY_DELAY: 1,
    Kind.POISON: 1,
}

# Faults that take the broker or the database away: not two at once, so that each one's
# recovery is observable (and the run does not degenerate into a permanent outage).
OUTAGES = {
    Kind.RABBIT_RESTART,
    Kind.PG_RESTART,
    Kind.AMQP_PROXY_BLACKHOLE,
    Kind.PG_PROXY_BLACKHOLE,
}

ROLES = ("orchestrator", "payments", "inventory", "shipping")


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    """Seconds after the load starts."""
    kind: Kind
    target: str = ""
    """For kill/pause: the role and index (`payments#1`); for poison: the queue it goes to."""
    seconds: float = 0.0
    """How long it lasts: the pause before a restart or SIGCONT, a blackhole or a delay."""
    mode: str = ""
    """pg_restart: fast or immediate; blackholes: resume or reset; delay: the latency."""

    def describe(self) -> str:
        parts = [f"t={self.at:7.2f}s", f"{self.kind.value:<25}"]
        if self.target:
            parts.append(self.target)
        if self.seconds:
            parts.append(f"for {self.seconds:.1f}s")
        if self.mode:
            parts.append(self.mode)
        return " ".join(parts)


def build(
    seed: int,
    *,
    duration: float,
    faults: int,
    kinds: tuple[Kind, ...] = ALL_KINDS,
    replicas: int = 2,
    long_pauses: tuple[float, float] = (5.0, 20.0),
) -> list[Fault]:
    """`faults` faults over the first 85% of `duration` seconds; every kind at least once
    (when `faults` allows), then drawn by weight. Outages never overlap."""
    rng = random.Random(seed)
    drawn: list[Kind] = list(kinds)
    rng.shuffle(drawn)
    drawn = drawn[:faults]
    while len(drawn) < faults:
        drawn.append(rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0])
    rng.shuffle(drawn)

    span = duration * 0.85
    gap = span / max(len(drawn), 1)
    schedule: list[Fault] = []
    outage_until = 0.0
    for n, kind in enumerate(drawn):
        at = max(0.5, n * gap + rng.uniform(0, gap * 0.8))
        fault = _fault(rng, kind, at, replicas, long_pauses)
        if kind in OUTAGES:
            at = max(at, outage_until)
            fault = msgspec.structs.replace(fault, at=round(at, 2))
            outage_until = at + fault.seconds + 8.0  # time to come back and catch up
        schedule.append(fault)
    return sorted(schedule, key=lambda f: f.at)


def _fault(
    rng: random.Random, kind: Kind, at: float, replicas: int, long_pauses: tuple[float, float]
) -> Fault:
    at = round(at, 2)
    if kind in (Kind.KILL, Kind.PAUSE):
        target = f"{rng.choice(ROLES)}#{rng.randrange(replicas)}"
        seconds = rng.uniform(0.5, 3.0) if kind is Kind.KILL else rng.uniform(*long_pauses)
        return Fault(at=at, kind=kind, target=target, seconds=round(seconds, 1))
    if kind is Kind.RABBIT_RESTART:
        return Fault(at=at, kind=kind, seconds=round(rng.uniform(0.5, 3.0), 1))
    if kind is Kind.PG_RESTART:
        return Fault(at=at, kind=kind, mode=rng.choice(["fast", "immediate"]))
    if kind is Kind.PG_TERMINATE:
        return Fault(at=at, kind=kind, mode=rng.choice(["all", "half"]))
    if kind in (Kind.AMQP_PROXY_BLACKHOLE, Kind.PG_PROXY_BLACKHOLE):
        return Fault(
            at=at,
            kind=kind,
            seconds=round(rng.uniform(2.0, 8.0), 1),
            mode=rng.choice(["resume", "reset"]),
        )
    if kind in (Kind.AMQP_PROXY_DELAY, Kind.PG_PROXY_DELAY):
        latency = rng.choice(["0.05", "0.2", "0.5"])
        return Fault(at=at, kind=kind, seconds=round(rng.uniform(3.0, 10.0), 1), mode=latency)
    if kind is Kind.POISON:
        return Fault(at=at, kind=kind, target=rng.choice([*ROLES[1:], "orchestrator"]))
    return Fault(at=at, kind=kind)
