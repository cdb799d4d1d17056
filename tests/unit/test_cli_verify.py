"""`warren instances verify` asks for one instance or --all, before it calls the API."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from orchestrator.cli import main


@pytest.mark.parametrize("args", [[], ["01a23750-e551-7367-82dd-bd3e84895689", "--all"]])
def test_verify_wants_an_id_or_all_not_both(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["instances", "verify", *args])

    assert result.exit_code == 2
    assert "give an instance ID or --all (not both)" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
