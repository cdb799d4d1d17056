"""Crash points for fault-injection tests: `WARREN_CRASH_AT=<name>` SIGKILLs the process there.

They sit exactly where a crash is hardest to survive (after a commit, before the ack or the
publish). Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "WARREN_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(ENV_VAR) == name:
        os.kill(os.getpid(), signal.SIGKILL)
