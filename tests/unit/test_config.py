"""Configuration from the environment."""

from __future__ import annotations

import pytest

from orchestrator.config import ConfigError, Settings


def test_defaults_work_against_local_servers() -> None:
    settings = Settings.from_env({})

    assert settings.database_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:5432/")
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.topology.pool_queue("payments") == "warren.pool.payments"


def test_environment_overrides_and_converts() -> None:
    settings = Settings.from_env(
        {"WARREN_API_PORT": "9001", "WARREN_NAMESPACE": "acme", "OTHER": "x"}
    )

    assert settings.api_port == 9001
    assert settings.topology.commands_exchange == "acme.commands"
    assert settings.business_database_url == settings.database_url


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="api_port"):
        Settings.from_env({"WARREN_API_PORT": "eighty"})


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("WARREN_OUTBOX_GRACE_SECONDS", "-1", "outbox_grace_seconds"),
        ("WARREN_SWEEP_INTERVAL_SECONDS", "0", "sweep_interval_seconds"),
        ("WARREN_BATCH_SIZE", "0", "batch_size"),
        ("WARREN_DELIVERY_LIMIT", "-3", "delivery_limit"),
        ("WARREN_API_PORT", "70000", "api_port"),
        (
            "WARREN_BREAKERS",
            '{"payments": {"failure_rate": 1.5}}',
            "breakers[...].failure_rate",
        ),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_variable(
    variable: str, value: str, field: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: value})
    assert f"$.{field}" in refused.value.message
    assert refused.value.message.endswith(f"(check {variable})")


def test_zero_is_a_valid_duration_and_port() -> None:
    settings = Settings.from_env({"WARREN_OUTBOX_GRACE_SECONDS": "0", "WARREN_METRICS_PORT": "0"})
    assert (settings.outbox_grace_seconds, settings.metrics_port) == (0.0, 0)
