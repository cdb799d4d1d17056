"""The documentation's Python examples run: every ```python block in README.md and docs/.

Blocks marked `# needs: api` talk to a running API; tests/e2e/test_docs_live.py runs those
against a real stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
NEEDS_API = "# needs: api"


def examples(*, live: bool) -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for number, match in enumerate(BLOCK.finditer(document.read_text()), start=1):
            code = match.group(1)
            if (NEEDS_API in code) == live:
                found.append((f"{document.relative_to(ROOT)}#{number}", code))
    return found


OFFLINE = examples(live=False)


def test_the_docs_have_examples() -> None:
    assert len(OFFLINE) >= 6
    assert examples(live=True)


@pytest.mark.parametrize(("where", "code"), OFFLINE, ids=[where for where, _ in OFFLINE])
def test_example_runs(where: str, code: str) -> None:
    exec(compile(code, where, "exec"), {"__name__": f"docs_example_{abs(hash(where))}"})


def test_authoring_sagas_shows_every_node_kind_in_an_example_that_runs() -> None:
    """Each flow node kind has an example among the blocks `test_example_runs` executes, and
    the one compensation table has a row for each."""
    authoring = [code for where, code in OFFLINE if where.startswith("docs/authoring-sagas.md")]
    kinds = ("Step", "Parallel", "Choice", "Map", "ChildSaga")

    assert [kind for kind in kinds if not any(f"{kind}(" in code for code in authoring)] == []
    assert any("input_map=" in code and "Worker(" in code for code in authoring)
    text = (ROOT / "docs" / "authoring-sagas.md").read_text()
    [table] = [part for part in text.split("\n\n") if "| what is undone |" in part]
    assert [row.split("|")[1].strip() for row in table.splitlines()[2:]] == [
        f"`{kind}`" for kind in kinds
    ]
