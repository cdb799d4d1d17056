"""Payload versions: the upcaster registry, the setting that loads upcaster modules, and the
version every command and reply carries."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

import orchestrator
import workers
from orchestrator.config import ConfigError, Settings
from orchestrator.errors import DefinitionError, MessageError, UnknownVersion
from orchestrator.messaging.envelope import (
    Command,
    CommandPayload,
    Phase,
    decode,
    encode,
    new_message_id,
    utcnow,
)
from orchestrator.messaging.versions import (
    UPCASTERS,
    Upcasters,
    load_upcaster_modules,
    upcaster,
)
from workers.runtime import in_current_shape


def _registry() -> Upcasters:
    """order.placed: v1 {"total"} → v2 {"amount"} → v3 {"amount", "currency"}."""
    registry = Upcasters()

    @upcaster("order.placed", from_version=1, registry=registry)
    def rename_total(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": data["total"]}

    @upcaster("order.placed", from_version=2, registry=registry)
    def add_currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return registry


def test_the_current_version_is_one_past_the_newest_upcaster() -> None:
    registry = _registry()

    assert registry.current("order.placed") == 3
    assert registry.current("order.cancelled") == 1


def test_old_payloads_are_upcast_through_the_chain() -> None:
    registry = _registry()

    assert registry.upcast("order.placed", 1, {"total": 5}) == (
        {"amount": 5, "currency": "EUR"},
        3,
    )
    assert registry.upcast("order.placed", 2, {"amount": 5}) == (
        {"amount": 5, "currency": "EUR"},
        3,
    )
    assert registry.upcast("order.placed", 3, {"amount": 5, "currency": "USD"}) == (
        {"amount": 5, "currency": "USD"},
        3,
    )
    assert registry.upcast("order.cancelled", 1, "as is") == ("as is", 1)


def test_a_newer_payload_than_known_names_type_version_and_the_newest_known() -> None:
    registry = _registry()

    with pytest.raises(UnknownVersion) as caught:
        registry.upcast("order.placed", 4, {})

    assert isinstance(caught.value, MessageError)  # poison: dead-lettered with this reason
    assert caught.value.message.startswith(
        "'order.placed' payload version 4 is newer than any this process knows (newest: 3)"
    )
    with pytest.raises(UnknownVersion, match=r"version 2 is newer .* \(newest: 1\)"):
        registry.check("order.cancelled", 2)


def test_a_second_upcaster_for_one_version_is_refused_when_registered() -> None:
    registry = _registry()

    with pytest.raises(DefinitionError) as caught:

        @upcaster("order.placed", from_version=2, registry=registry)
        def again(data: Any) -> Any:
            return data

    assert isinstance(caught.value, ValueError)
    assert "'order.placed' already has an upcaster from version 2" in caught.value.message
    assert "add_currency" in caught.value.message
    assert "<locals>.again would be a second one" in caught.value.message


@pytest.mark.parametrize("version", [0, -1, True, "2"])
def test_from_version_is_a_positive_integer(version: Any) -> None:
    with pytest.raises(ValueError, match="from_version must be a positive integer"):
        Upcasters().register("order.placed", version, lambda data: data)


def test_a_gap_in_the_chain_or_a_failing_upcaster_is_a_message_error() -> None:
    registry = Upcasters()
    registry.register("parcel.sent", 2, lambda data: data)
    registry.register("parcel.lost", 1, lambda data: data["missing"])

    with pytest.raises(MessageError, match="no upcaster from version 1"):
        registry.upcast("parcel.sent", 1, {})
    with pytest.raises(MessageError, match=r"failed on a 'parcel\.lost' payload of version 1: "):
        registry.upcast("parcel.lost", 1, {})


def test_the_decorator_registers_in_the_default_registry_and_is_public() -> None:
    assert orchestrator.upcaster is upcaster
    assert workers.upcaster is upcaster

    @orchestrator.upcaster("test-versions.default", from_version=1)
    def widen(data: Any) -> Any:
        return [data]

    assert UPCASTERS.current("test-versions.default") == 2
    assert UPCASTERS.upcast("test-versions.default", 1, 7) == ([7], 2)


# ---- the WARREN_UPCASTERS setting --------------------------------------------------------------


def test_the_setting_names_modules_comma_separated() -> None:
    settings = Settings.from_env({"WARREN_UPCASTERS": "shop.upcasters, billing.versions ,"})

    assert settings.upcasters == ("shop.upcasters", "billing.versions")
    assert Settings.from_env({}).upcasters == ()


def test_the_named_modules_are_imported_and_their_upcasters_register(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wire_test_upcasters.py").write_text(
        "from workers import upcaster\n\n"
        "@upcaster('test-versions.loaded', from_version=1)\n"
        "def v2(data):\n"
        "    return {'v': 2}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "wire_test_upcasters", raising=False)

    load_upcaster_modules(["wire_test_upcasters"])
    load_upcaster_modules(["wire_test_upcasters"])  # once per process: no duplicate

    assert UPCASTERS.current("test-versions.loaded") == 2


def test_a_module_that_cannot_be_imported_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"WARREN_UPCASTERS names module 'no\.such\.module'"):
        load_upcaster_modules(["no.such.module"])


# ---- versions on commands and replies ----------------------------------------------------------


def _command(name: str, version: int, input: Any) -> Command:
    return Command(
        id=new_message_id(),
        saga="order",
        saga_version=1,
        instance_id=new_message_id(),
        step="place",
        phase=Phase.FORWARD,
        command=name,
        attempt=1,
        seq=1,
        correlation_id=new_message_id(),
        timestamp=utcnow(),
        payload_version=version,
        payload=CommandPayload(input=input, results={}, idempotency_key="k"),
    )


def test_a_message_from_before_versions_is_version_one() -> None:
    body = msgspec.json.decode(encode(_command("place", 1, {})))
    del body["payload_version"]

    assert decode(msgspec.json.encode(body)).payload_version == 1


def test_a_version_below_one_is_undecodable() -> None:
    body = msgspec.json.decode(encode(_command("place", 1, {})))
    body["payload_version"] = 0

    with pytest.raises(MessageError, match="payload_version"):
        decode(msgspec.json.encode(body))


def test_the_worker_upcasts_an_older_command_input_and_keeps_the_version_it_was_sent_in() -> None:
    registry = _registry()
    command = _command("order.placed", 1, {"total": 5})

    upcast = in_current_shape(command, registry)

    assert upcast.payload.input == {"amount": 5, "currency": "EUR"}
    assert upcast.payload_version == 1  # its reply echoes it to the orchestrator that wrote it
    assert in_current_shape(_command("order.placed", 3, {"x": 1}), registry).payload.input == {
        "x": 1
    }


def test_the_worker_refuses_a_command_newer_than_it_knows() -> None:
    with pytest.raises(UnknownVersion, match=r"'order\.placed' payload version 4 is newer"):
        in_current_shape(_command("order.placed", 4, {}), _registry())
