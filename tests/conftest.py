"""Shared PostgreSQL fixtures for the whole suite.

`pg_server_dsn` (session): the server named by AVAILMON_TEST_PG_DSN, or else one embedded
server started once in a session temp dir. `pg_dsn` (per test): a fresh, empty database on it,
dropped afterwards, so tests are isolated even on a shared server. `repo`: a migrated
Repository on that database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from availmon.store import EmbeddedPostgres, Repository, apply_migrations, dsn_with_database


@contextlib.contextmanager
def server_state_dir() -> Iterator[Path]:
    """A temp dir for an embedded server's state, outside pytest's basetemp.

    Run as root, the server runs as another user who must traverse every parent of pgdata;
    pytest resets /tmp/pytest-of-<user> to 0700 whenever any pytest session starts, which
    would cut a running server's pg_ctl off from its data directory.
    """
    path = Path(tempfile.mkdtemp(prefix="availmon-test-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_state_dir() -> Iterator[Path]:
    with server_state_dir() as path:
        yield path


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """A DSN with rights to CREATE DATABASE. Synchronous: no event loop is shared."""
    external = os.environ.get("AVAILMON_TEST_PG_DSN")
    if external:
        yield external
        return
    with server_state_dir() as state_dir:
        server = EmbeddedPostgres(state_dir, durable=False)
        dsn = asyncio.run(server.start())
        try:
            yield dsn
        finally:
            asyncio.run(server.stop())


async def _admin(server_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(server_dsn)
    try:
        for attempt in range(20):
            try:
                await conn.execute(sql)
                return
            except asyncpg.ObjectInUseError:
                # CREATE DATABASE copies template1 and fails while anyone else is connected
                # to it (possible on a shared server); that never lasts long.
                if attempt == 19:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


@pytest.fixture
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    await _admin(pg_server_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield dsn_with_database(pg_server_dsn, name)
    finally:
        await _admin(pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def repo(pg_dsn: str) -> AsyncIterator[Repository]:
    repository = await Repository.connect(pg_dsn, pool_size=4)
    try:
        await apply_migrations(repository.pool)
        yield repository
    finally:
        await repository.close()


@pytest.fixture(autouse=True)
def daemon_state_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test's daemon keeps its state (spool, embedded cluster) in a fresh folder, never
    in the default /var/lib/availmon. Outside pytest's basetemp for the reason given in
    `server_state_dir`; set through the environment, which wins over any Settings(...)."""
    with server_state_dir() as path:
        path.chmod(0o755)
        monkeypatch.setenv("AVAILMON_DAEMON__STATE_DIR", str(path))
        yield path
