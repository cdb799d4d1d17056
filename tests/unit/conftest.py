"""Unit tests' shared set-up."""

import pytest

# The engine's builders and reference model assert on every transition: let pytest explain
# their failures as it does a test's own asserts.
pytest.register_assert_rewrite("tests.support.engine", "tests.support.engine_model")
