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
