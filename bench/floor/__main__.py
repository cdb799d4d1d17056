"""Run the floor alone and print its figures as JSON (progress on stderr).

.venv/bin/python -m bench.floor --sagas 1000
.venv/bin/python -m bench --floor --sagas 1000    # the floor, then Warren, and the ratio
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.floor.run import run_floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--sagas", type=int, default=1000, help="sagas started at once")
    parser.add_argument("--warmup", type=int, default=50, help="sagas run before measuring")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this directory")
    args = parser.parse_args(argv)
    if args.sagas < 1 or args.warmup < 0:
        parser.error("--sagas must be at least 1 and --warmup at least 0")
    with tempfile.TemporaryDirectory(prefix="warren-floor-") as tmp:
        log_dir = args.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        figures = run_floor(args.sagas, args.warmup, args.timeout, log_dir)
    json.dump(figures, sys.stdout, indent=2, default=str)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
