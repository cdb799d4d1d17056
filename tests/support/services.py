"""Isolation on the shared servers: every test run (and every benchmark run) gets its own
databases and its own vhost, and removes them when it ends (even when it fails)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aio_pika
import asyncpg

if TYPE_CHECKING:
    from orchestrator.messaging.topology import Topology


@dataclass(frozen=True)
class Servers:
    """The shared Postgres and RabbitMQ, as an administrator reaches them."""

    admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp_base: str = "amqp://guest:guest@127.0.0.1:5672"
    rabbitmqctl_command: str = "rabbitmqctl"

    @classmethod
    def from_env(cls, prefix: str) -> Servers:
        """PREFIX_POSTGRES, PREFIX_AMQP and PREFIX_RABBITMQCTL override the local defaults."""
        defaults = cls()
        return cls(
            admin_dsn=os.environ.get(f"{prefix}POSTGRES", defaults.admin_dsn),
            amqp_base=os.environ.get(f"{prefix}AMQP", defaults.amqp_base),
            rabbitmqctl_command=os.environ.get(
                f"{prefix}RABBITMQCTL", defaults.rabbitmqctl_command
            ),
        )

    def database_url(self, name: str) -> str:
        base = self.admin_dsn.rsplit("/", 1)[0]
        return f"{base}/{name}"

    async def admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def run_admin(self, *statements: str) -> None:
        asyncio.run(self.admin(*statements))

    async def create_database(self, name: str, *, template: str | None = None) -> None:
        clause = f" TEMPLATE {template}" if template else ""
        await self.admin(f'CREATE DATABASE "{name}"{clause}')

    async def drop_database(self, name: str) -> None:
        await self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_databases_with_prefix(self, prefix: str) -> None:
        async def drop_all() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                names = await conn.fetch(
                    "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
                )
                for row in names:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop_all())

    def rabbitmqctl(self, *args: str) -> str:
        """Run `rabbitmqctl -q ARGS`; its output."""
        command = self.rabbitmqctl_command
        if shutil.which(command) is None:
            raise RuntimeError(f"{command} not found: a scratch RabbitMQ vhost is made with it")
        done = subprocess.run(
            [command, "-q", *args], check=True, capture_output=True, text=True, timeout=60
        )
        return done.stdout.strip()

    def create_vhost(self, name: str) -> str:
        self.rabbitmqctl("add_vhost", name)
        self.rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return f"{self.amqp_base}/{name}"

    def delete_vhost(self, name: str) -> None:
        self.rabbitmqctl("delete_vhost", name)


TEST_SERVERS = Servers.from_env("WARREN_TEST_")

# The tests' servers, as functions (the benchmark makes its own Servers from BENCH_*).
database_url = TEST_SERVERS.database_url
run_admin = TEST_SERVERS.run_admin
create_database = TEST_SERVERS.create_database
drop_database = TEST_SERVERS.drop_database
drop_databases_with_prefix = TEST_SERVERS.drop_databases_with_prefix
create_vhost = TEST_SERVERS.create_vhost
delete_vhost = TEST_SERVERS.delete_vhost


def new_run_id() -> str:
    return f"warren_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"


class QueueJanitor:
    """Deletes the queues and exchanges of the tests that ended, a few tests at a time.

    A run's vhost lives as long as the run, and every test declares a namespace of quorum queues
    in it. Left there, a few hundred quorum queues holding messages make RabbitMQ stop accepting
    connections (seen at the 317th namespace of a full run: new connections hung, established
    ones kept working; reproduced with 500 queues of one message each). Listing the queues
    costs a `rabbitmqctl` call, so the sweep runs every `every` tests, over one AMQP connection.
    """

    def __init__(
        self, vhost: str, amqp_url: str, *, every: int = 8, servers: Servers = TEST_SERVERS
    ) -> None:
        self.vhost = vhost
        self.rabbitmqctl = servers.rabbitmqctl_command
        self.amqp_url = amqp_url
        self.every = every
        self._ended: list[Topology] = []

    def ended(self, topology: Topology) -> None:
        self._ended.append(topology)
        if len(self._ended) >= self.every:
            self.sweep()

    def sweep(self) -> None:
        ended, self._ended = self._ended, []
        if not ended:
            return
        prefixes = tuple(f"{t.namespace}." for t in ended)
        listed = subprocess.run(
            [self.rabbitmqctl, "-q", "list_queues", "-p", self.vhost, "--no-table-headers", "name"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        queues = [name for name in listed if name.startswith(prefixes)]
        exchanges = [
            name
            for t in ended
            for name in (
                t.commands_exchange,
                t.replies_exchange,
                t.events_exchange,
                t.dead_letter_exchange,
            )
        ]
        # Its own loop, in its own thread: the caller may be inside the tests' event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._delete(queues, exchanges)).result(timeout=120)

    async def _delete(self, queues: list[str], exchanges: list[str]) -> None:
        connection = await aio_pika.connect(self.amqp_url, timeout=30)
        async with connection:
            channel = await connection.channel()
            for name in queues:
                await channel.queue_delete(name)
            for name in exchanges:
                await channel.exchange_delete(name)
