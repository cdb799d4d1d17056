"""Warren's real processes for end-to-end tests: started as OS processes, killed for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from tests.support.waiting import wait_for

if TYPE_CHECKING:
    from orchestrator.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_env(settings: Settings) -> dict[str, str]:
    env = {
        "WARREN_DATABASE_URL": settings.database_url,
        "WARREN_AMQP_URL": settings.amqp_url,
        "WARREN_NAMESPACE": settings.namespace,
        "WARREN_DELIVERY_LIMIT": str(settings.delivery_limit),
        "WARREN_OUTBOX_GRACE_SECONDS": str(settings.outbox_grace_seconds),
        "WARREN_SWEEP_INTERVAL_SECONDS": str(settings.sweep_interval_seconds),
        "WARREN_SHUTDOWN_GRACE_SECONDS": str(settings.shutdown_grace_seconds),
        "WARREN_API_HOST": settings.api_host,
        "WARREN_API_PORT": str(settings.api_port),
        # Many processes share this machine: no metrics port unless a test asks for one.
        "WARREN_METRICS_PORT": str(settings.metrics_port or 0),
    }
    if settings.breakers:
        env["WARREN_BREAKERS"] = msgspec.json.encode(settings.breakers).decode()
    env["WARREN_BREAKER_WINDOW_SECONDS"] = str(settings.breaker_window_seconds)
    if settings.worker_database_url:
        env["WARREN_WORKER_DATABASE_URL"] = settings.worker_database_url
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> None:
        """An `alive` check for wait_for: a process that exited fails the wait with its log."""
        if not self.running:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) exited with {self.popen.returncode}:\n"
                f"{self.log()[-4000:]}"
            )


def all_alive(procs: list[Proc]) -> Callable[[], None]:
    """An `alive` check for wait_for over several processes."""

    def check() -> None:
        for proc in procs:
            proc.alive()

    return check


async def wait_exit(proc: Proc, within: float = 20.0) -> int:
    """Until `proc` has exited; its exit code."""

    async def returncode() -> int | None:
        return proc.popen.poll()

    code = await wait_for(
        returncode, lambda c: c is not None, timeout=within, what=f"{proc.name} to exit"
    )
    assert code is not None
    return code


@dataclass
class Processes:
    """Starts `warren` subcommands against one test's settings; kills them all at teardown."""

    settings: Settings
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every process started from now on (OTEL_*, say)."""

    def start(
        self,
        name: str,
        *args: str,
        env: dict[str, str | None] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Run `warren ARGS` (in `cwd`); a None value in `env` leaves that variable unset."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
        merged = {**inherited, **settings_env(self.settings), **self.env, **(env or {})}
        full_env = {k: v for k, v in merged.items() if v is not None}
        log_path = self.log_dir / f"{len(self.procs):02d}-{name}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "--log-level", "INFO", *args],
                env=full_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=cwd,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def api(self) -> Proc:
        return self.start("api", "api")

    def orchestrator(self, *, crash_at: str | None = None) -> Proc:
        env: dict[str, str | None] | None = {"WARREN_CRASH_AT": crash_at} if crash_at else None
        return self.start("orchestrator", "orchestrator", env=env)

    def worker(
        self,
        app: str = "examples.orders.workers:worker",
        *pools: str,
        crash_at: str | None = None,
        concurrency: int | None = None,
        env: dict[str, str | None] | None = None,
    ) -> Proc:
        """`warren worker`, with its default `--concurrency` unless one is given."""
        args = ["worker", "--app", app]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        for pool in pools:
            args += ["--pool", pool]
        env = {**(env or {}), **({"WARREN_CRASH_AT": crash_at} if crash_at else {})}
        return self.start("worker-" + ("-".join(pools) or "all"), *args, env=env)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.running:
                proc.kill()

    def terminate_all(self, grace: float) -> list[Proc]:
        """SIGTERM every process, then SIGKILL those still running after `grace` seconds;
        returns those (hung on shutdown)."""
        for proc in self.procs:
            proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        hung = []
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(proc)
                proc.kill()
        return hung

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name} (pid {p.pid}) =====\n{p.log()[-6000:]}" for p in self.procs
        )


# The installed `warren` script, as a user runs it (`python -m` would put the current directory
# on sys.path by itself and hide what the script does).
WARREN = str(Path(sys.executable).with_name("warren"))


def run_warren(
    env: dict[str, str], *args: str, timeout: float = 90, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `warren` command line as a user would: `env` holds its WARREN_* variables."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    return subprocess.run(
        [WARREN, *args],
        env={**inherited, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_refused(done: subprocess.CompletedProcess[str], returncode: int, message: str) -> None:
    """A command that stopped as a user should see it: `returncode`, one clear `message` on
    stderr, no traceback."""
    assert done.returncode == returncode, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
