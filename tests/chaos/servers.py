"""Private Postgres and RabbitMQ servers for the chaos harness.

The machine's own servers are shared with other people's tests: the harness never restarts them,
never closes their connections. It starts its own: a Postgres cluster made with `initdb` in a
temporary directory and a second RabbitMQ node with its own name, ports, data directory and
Erlang cookie. Both listen on 127.0.0.1 only, on free ports, and are torn down when the run ends
(`Cleanup` runs on normal exit, on exceptions, at interpreter exit and on SIGTERM/SIGINT).

Running as root, Postgres runs as the `postgres` user (it refuses root); RabbitMQ runs as root
from /usr/lib/rabbitmq/bin (Debian's /usr/sbin wrappers would `su rabbitmq` and use that user's
home and cookie) with HOME pointing at the temporary directory, so its cookie is private.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from tests.support.processes import free_port

RABBITMQ_BIN = Path(os.environ.get("WARREN_CHAOS_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))


class ServerError(RuntimeError):
    """A private server could not be started or controlled."""


class Cleanup:
    """Teardown actions, run once, newest first: at the end of the run, at interpreter exit,
    or on SIGTERM/SIGINT (which then exit with 128 + the signal number)."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self._done = False
        atexit.register(self.run)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread: atexit still holds
                signal.signal(sig, self._on_signal)

    def add(self, what: str, action: Callable[[], None]) -> None:
        self._actions.append((what, action))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.run()
        raise SystemExit(128 + signum)

    def run(self) -> None:
        if self._done:
            return
        self._done = True
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - keep tearing the rest down
                print(f"chaos: teardown of {what} failed: {exc}", flush=True)


def _run(args: list[str], *, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if result.returncode != 0:
        raise ServerError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise ServerError("no /usr/lib/postgresql/*/bin/initdb: install postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    """A throwaway Postgres cluster (fsync on) on a free port of 127.0.0.1."""

    def __init__(self, cleanup: Cleanup) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="warren-chaos-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # Postgres refuses to run as root
            os.chown(self.dir, pwd.getpwnam("postgres").pw_uid, -1)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        cleanup.add("private postgres", self.destroy)

    @property
    def admin_dsn(self) -> str:
        """Direct (not proxied) superuser connection: the harness's own probes."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, *, port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{database}"

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> str:
        return _run([*self._as_postgres, str(self.bin / tool), *args], timeout=timeout)

    def create(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nmax_connections = 400\n"
                "fsync = on\nsynchronous_commit = on\n"
            )
        self.start()

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60",
            "restart",
        )  # fmt: skip

    def running(self) -> bool:
        result = subprocess.run(
            [*self._as_postgres, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def destroy(self) -> None:
        try:
            if self.data.exists() and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbitMQ:
    """A second RabbitMQ node (no plugins) with its own name, ports, data and cookie."""

    def __init__(self, cleanup: Cleanup) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise ServerError(f"no {RABBITMQ_BIN}/rabbitmq-server (WARREN_CHAOS_RABBITMQ_BIN)")
        self.node = f"warren-chaos-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="warren-chaos-rmq-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._boots = 0
        cookie = self.dir / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "rabbitmq.conf").write_text("loopback_users = none\n")
        cleanup.add("private rabbitmq", self.destroy)

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        return {
            **keep,
            "HOME": str(self.dir),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def url(self, *, port: int | None = None) -> str:
        return f"amqp://guest:guest@127.0.0.1:{port or self.port}/"

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return _run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            timeout=timeout,
            env=self.env,
        )

    def start(self, *, within: float = 90) -> None:
        self._boots += 1
        log = (self.dir / f"server-{self._boots}.log").open("wb")
        self._proc = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env,
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + within
        while True:
            if self._proc.poll() is not None:
                raise ServerError(f"rabbitmq-server exited; see {log.name}")
            try:
                self.ctl("await_startup", "--timeout", "30", timeout=40)
                return
            except ServerError:  # not registered with epmd yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the whole node (the Erlang VM), not only the rabbit app."""
        if self._proc is None:
            return
        with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
            self.ctl("stop", timeout=60)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def list_queues(self, vhost: str = "/") -> dict[str, tuple[int, int, int]]:
        """name -> (ready, unacked, consumers)."""
        out = self.ctl(
            "list_queues", "-p", vhost, "--no-table-headers",
            "name", "messages_ready", "messages_unacknowledged", "consumers",
        )  # fmt: skip
        queues: dict[str, tuple[int, int, int]] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and parts[1].isdigit():
                queues[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
        return queues

    def destroy(self) -> None:
        try:
            if self._proc is not None and self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
        finally:
            self._proc = None
            shutil.rmtree(self.dir, ignore_errors=True)
