"""Configuration from the environment, with defaults that work against local servers."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated

import msgspec

from orchestrator.errors import WarrenError

if TYPE_CHECKING:
    from orchestrator.messaging.topology import Topology

# Field names whose values the logs never show (WARREN_LOG_REDACT replaces the list).
DEFAULT_REDACT = ("password", "secret", "token", "api_key", "authorization", "card_number", "cvv")


class ConfigError(WarrenError):
    """An environment variable has a value Warren cannot use."""


# Ranges checked when the environment is read (`Settings.from_env`): a negative duration or a
# batch of 0 is refused at start, with the variable named, instead of misbehaving later.
Count = Annotated[int, msgspec.Meta(ge=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Interval = Annotated[float, msgspec.Meta(gt=0)]
Share = Annotated[float, msgspec.Meta(ge=0, le=1)]


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a pool's circuit breaker opens, and for how long."""

    failure_rate: Share = 0.5
    """Open when at least this share of the pool's recent attempts failed…"""
    min_calls: Count = 20
    """…out of at least this many attempts (since the breaker last changed state)."""
    open_seconds: Interval = 10.0
    """Stay open this long, then let one probe command through (half-open)."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/warren"
    """WARREN_DATABASE_URL: the orchestrator's database (definitions, instances, outbox…)."""
    worker_database_url: str | None = None
    """WARREN_WORKER_DATABASE_URL: the workers' business database; defaults to the above."""
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """WARREN_AMQP_URL."""
    namespace: str = "warren"
    """WARREN_NAMESPACE: prefix of every exchange and queue name."""
    delivery_limit: Count = 5
    """WARREN_DELIVERY_LIMIT: deliveries of one message before it is dead-lettered."""
    api_host: str = "127.0.0.1"
    """WARREN_API_HOST."""
    api_port: Port = 8000
    """WARREN_API_PORT."""
    max_body_bytes: Count = 1024 * 1024
    """WARREN_MAX_BODY_BYTES: larger request bodies get 413."""
    prefetch: Count = 32
    """WARREN_PREFETCH: messages an orchestrator holds at once."""
    batch_size: Count = 32
    """WARREN_BATCH_SIZE: replies an orchestrator (or commands a worker) handles in one
    transaction, at most: those that arrived while the last batch was handled. 1: one by one."""
    outbox_grace_seconds: Seconds = 2.0
    """WARREN_OUTBOX_GRACE_SECONDS: the sweeper leaves younger rows to their committer."""
    sweep_interval_seconds: Interval = 1.0
    """WARREN_SWEEP_INTERVAL_SECONDS: how often leftover outbox rows and due timers are polled."""
    shutdown_grace_seconds: Seconds = 30.0
    """WARREN_SHUTDOWN_GRACE_SECONDS: how long SIGTERM waits for in-flight work."""
    breaker_window_seconds: Interval = 30.0
    """WARREN_BREAKER_WINDOW_SECONDS: how far back a pool's failure rate looks."""
    event_retention_seconds: Seconds = 7 * 24 * 3600.0
    """WARREN_EVENT_RETENTION_SECONDS: how long a received event is kept: inspectable, and
    delivered to a wait for it that begins later."""
    metrics_host: str = "127.0.0.1"
    """WARREN_METRICS_HOST: where orchestrators and workers serve /metrics."""
    metrics_port: Port | None = None
    """WARREN_METRICS_PORT: their /metrics port; unset: 9464 for an orchestrator, 9465 for a
    worker, or a free port when that one is taken (the process logs which); 0: none. The API
    serves /metrics on its own port."""
    log_payloads: bool = False
    """WARREN_LOG_PAYLOADS: log each message's payload (secret fields redacted)."""
    log_redact: tuple[str, ...] = DEFAULT_REDACT
    """WARREN_LOG_REDACT: comma-separated field names whose values logs never show."""
    upcasters: tuple[str, ...] = ()
    """WARREN_UPCASTERS: comma-separated modules every Warren process imports at start, so
    that the `@upcaster`s they define register (orchestrator.messaging.versions)."""
    breakers: dict[str, BreakerPolicy] = {}
    """WARREN_BREAKERS: JSON, per pool name, with "*" for every other pool, e.g.
    {"*": {"failure_rate": 0.5}, "payments": {"min_calls": 5, "open_seconds": 30}}."""

    def breaker_for(self, pool: str) -> BreakerPolicy:
        return self.breakers.get(pool) or self.breakers.get("*") or BreakerPolicy()

    @property
    def topology(self) -> Topology:
        """The exchanges and queues these settings name. The messaging layer builds it, imported
        on use: reading the configuration (the client, the CLI) loads no messaging."""
        from orchestrator.messaging.topology import Topology

        return Topology(namespace=self.namespace, delivery_limit=self.delivery_limit)

    @property
    def business_database_url(self) -> str:
        return self.worker_database_url or self.database_url

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(f"WARREN_{field.name.upper()}")
            if raw is None:
                continue
            if field.name == "breakers":
                try:
                    values[field.name] = msgspec.json.decode(raw)
                except msgspec.DecodeError as exc:
                    raise ConfigError(f"WARREN_BREAKERS is not valid JSON: {exc}") from exc
            elif field.name in ("log_redact", "upcasters"):
                values[field.name] = [name.strip() for name in raw.split(",") if name.strip()]
            else:
                values[field.name] = raw
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            where = re.search(r"at `\$\.(\w+)", str(exc))
            variable = f"WARREN_{where.group(1).upper()}" if where else "the WARREN_* variables"
            raise ConfigError(f"invalid configuration: {exc} (check {variable})") from exc
