"""Isolation on the shared servers: every test run gets its own databases and its own vhost,
and removes them when it ends (even when it fails)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid

import asyncpg

ADMIN_DSN = os.environ.get("WARREN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("WARREN_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQCTL = os.environ.get("WARREN_TEST_RABBITMQCTL", "rabbitmqctl")


def new_run_id() -> str:
    return f"warren_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def database_url(name: str) -> str:
    base = ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def run_admin(*statements: str) -> None:
    asyncio.run(_admin(*statements))


async def create_database(name: str, *, template: str | None = None) -> None:
    clause = f" TEMPLATE {template}" if template else ""
    await _admin(f'CREATE DATABASE "{name}"{clause}')


async def drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_databases_with_prefix(prefix: str) -> None:
    async def drop_all() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            names = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
            )
            for row in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop_all())


def _rabbitmqctl(*args: str) -> None:
    if shutil.which(RABBITMQCTL) is None:
        raise RuntimeError(f"{RABBITMQCTL} not found: the tests create a RabbitMQ vhost with it")
    subprocess.run([RABBITMQCTL, "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(name: str) -> str:
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return f"{AMQP_BASE}/{name}"


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name)
