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
