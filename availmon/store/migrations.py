"""Numbered, forward-only SQL migrations.

Files are named ``NNNN_description.sql``; the version recorded in ``schema_migrations`` is the
file name without ``.sql`` (``"0001_init"``), and no two files may share a number. Each pending
file runs in its own transaction, in order, while the session holds a fixed advisory lock, so
two processes starting together apply each file exactly once.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from availmon.errors import StorageError

log = structlog.get_logger("availmon.store")

# Arbitrary but fixed: every availmon process serialises migrations on this key.
MIGRATION_LOCK_KEY = 0x61766D6E_6D696772  # "avmnmigr"

_FILE_NAME = re.compile(r"^(?P<version>(?P<number>\d{4})_[A-Za-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def default_sql_dir() -> Traversable:
    """The migrations shipped with this code.

    In a source checkout (editable install) that is the repository's top-level ``sql/``; an
    installed wheel carries the same files as package data in ``availmon/sql/``.
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "sql").is_dir() and (root / "pyproject.toml").is_file():
        return root / "sql"
    return resources.files("availmon") / "sql"


def discover(sql_dir: Traversable) -> list[tuple[str, Traversable]]:
    """(version, file) pairs in order; two files with the same number are an error."""
    if not sql_dir.is_dir():
        raise StorageError(f"migrations folder {sql_dir} does not exist")
    found: dict[str, tuple[str, Traversable]] = {}
    for entry in sql_dir.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None or not entry.is_file():
            continue
        number = match["number"]
        if number in found:
            raise StorageError(
                f"two migrations share number {number}: {found[number][1].name}, {entry.name}"
            )
        found[number] = (match["version"], entry)
    return [found[number] for number in sorted(found)]


async def apply_migrations(
    conn_or_pool: Any, sql_dir: Path | Traversable | None = None
) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date).

    `conn_or_pool` is an asyncpg Connection or Pool. Raises StorageError naming the file when
    one fails; files before it stay applied.
    """
    files = discover(sql_dir if sql_dir is not None else default_sql_dir())
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await _apply(conn, files)
    return await _apply(conn_or_pool, files)


async def _apply(conn: Any, files: list[tuple[str, Traversable]]) -> list[str]:
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        rows = await conn.fetch("SELECT version FROM schema_migrations")
        done = {row["version"] for row in rows}
        applied: list[str] = []
        for version, path in files:
            if version in done:
                continue
            sql = path.read_text(encoding="utf-8")
            try:
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
            except asyncpg.PostgresError as exc:
                raise StorageError(f"migration {path.name} failed: {exc}") from exc
            log.info("migration_applied", version=version, file=path.name)
            applied.append(version)
        return applied
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
