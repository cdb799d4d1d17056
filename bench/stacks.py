"""Summarise py-spy collapsed stacks (``py-spy record --format raw``, as `--profile` writes).

    .venv/bin/python -m bench.stacks /tmp/prof/orchestrator-1.txt [--top 25]

Prints, for one profile: the share of samples by library (the innermost frame's package: own
time) and by library anywhere on the stack (cumulative), then the top functions by own and by
cumulative share.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Checked in order: the first fragment found in a frame's file path names its library.
LIBRARIES = [
    ("sqlalchemy/orm/", "sqlalchemy.orm"),
    ("sqlalchemy/", "sqlalchemy"),
    ("asyncpg/", "asyncpg"),
    ("aio_pika/", "aio_pika"),
    ("aiormq/", "aiormq"),
    ("pamqp/", "pamqp"),
    ("msgspec/", "msgspec"),
    ("jsonschema/", "jsonschema"),
    ("referencing/", "jsonschema"),
    ("rpds/", "jsonschema"),
    ("opentelemetry/", "opentelemetry"),
    ("litestar/", "litestar"),
    ("uvicorn/", "uvicorn"),
    ("httptools/", "uvicorn"),
    ("h11/", "uvicorn"),
    ("anyio/", "anyio"),
    ("tenacity/", "tenacity"),
    ("uuid_utils/", "uuid_utils"),
    ("click/", "click"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio"),
    ("selectors.py", "asyncio"),
    ("orchestrator/", "warren"),
    ("workers/", "warren"),
    ("bench/", "bench"),
]


def library(frame: str) -> str:
    match = _FRAME.match(frame)
    path = match.group("file") if match else frame
    for fragment, name in LIBRARIES:
        if path.startswith(fragment) or "/" + fragment in path:
            return name
    return "other" if path.endswith(".py") else "native/other"


def short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "python3.11/", "wt-bench/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({file})"


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        stacks.append((frames, int(count)))
    return stacks


def summarise(path: Path, top: int, drop_leaf: str | None = None) -> str:
    stacks = load(path)
    dropped = 0
    if drop_leaf:
        pattern = re.compile(drop_leaf)
        kept = [(f, c) for f, c in stacks if not (f and pattern.search(f[-1]))]
        dropped = sum(c for _, c in stacks) - sum(c for _, c in kept)
        stacks = kept
    total = sum(count for _, count in stacks) or 1
    own_lib: Counter[str] = Counter()
    cum_lib: Counter[str] = Counter()
    own_fn: Counter[str] = Counter()
    cum_fn: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own_lib[library(frames[-1])] += count
        own_fn[short(frames[-1])] += count
        for name in {library(f) for f in frames}:
            cum_lib[name] += count
        for name in {short(f) for f in frames}:
            cum_fn[name] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"{path.name}: {total} samples" + (f" ({dropped} dropped)" if dropped else "")]
    lines.append("  library          own    cumulative")
    for name, n in own_lib.most_common():
        lines.append(f"  {name:<15} {pct(n)}  {pct(cum_lib[name])}")
    lines.append(f"  top {top} functions by own time")
    lines += [f"    {pct(n)}  {name}" for name, n in own_fn.most_common(top)]
    lines.append(f"  top {top} functions by cumulative time")
    lines += [f"    {pct(n)}  {name}" for name, n in cum_fn.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__)
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--drop-leaf", help="leave out samples whose innermost frame matches")
    args = parser.parse_args(argv)
    for path in args.profiles:
        print(summarise(path, args.top, args.drop_leaf))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
