"""Status write throughput: binary COPY vs executemany, at batch sizes 100 / 1000 / 5000.

    .venv/bin/python bench/writer_bench.py [DSN] [--rows N]

DSN names a server where we may CREATE DATABASE; without it an embedded server is started in
a temp dir (durable settings, as the daemon runs it). A throwaway database is created,
migrated, measured and dropped. Prints one JSON line: rows/s per method and batch size, plus
the StatusWriter end to end (submit N rows, then stop()).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from availmon.model import Reason, Status, StatusRow
from availmon.store import (
    EmbeddedPostgres,
    Repository,
    StatusWriter,
    apply_migrations,
    dsn_with_database,
    redact_dsn,
)
from availmon.store.statuses import STATUS_COLUMNS

BATCH_SIZES = (100, 1000, 5000)
T0 = datetime(2030, 1, 1, tzinfo=UTC)
INSERT = (
    f"INSERT INTO statuses ({', '.join(STATUS_COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (endpoint_id, checked_at) DO NOTHING"
)


def make_rows(endpoint_id: int, count: int) -> list[StatusRow]:
    """Realistic rows: mostly UP with timings, every 20th DOWN with an error and no timing."""
    out = []
    for i in range(count):
        down = i % 20 == 0
        out.append(
            StatusRow(
                endpoint_id=endpoint_id,
                checked_at=T0 + timedelta(milliseconds=10 * i),
                status=Status.DOWN if down else Status.UP,
                reason=Reason.TIMEOUT if down else Reason.OK,
                response_time_ms=None if down else 10.0 + i % 300,
                error="timed out after 10 s" if down else None,
                attempts=3 if down else 1,
                details={"http_status": None if down else 200, "phases": {"connect": 1.2}},
            )
        )
    return out


def records(rows: list[StatusRow]) -> list[tuple[Any, ...]]:
    return [
        (r.endpoint_id, r.checked_at, str(r.status), str(r.reason), r.response_time_ms,
         r.error, r.attempts, r.details)
        for r in rows
    ]  # fmt: skip


async def measure(repo: Repository, rows_per_case: int) -> dict[str, Any]:
    results: dict[str, dict[str, int]] = {"copy": {}, "executemany": {}}
    endpoint_id = 1000
    await repo.write_statuses(make_rows(1, 10))  # warm up connections, codecs, caches
    async with repo.pool.acquire() as conn:
        await conn.executemany(INSERT, records(make_rows(2, 10)))
    for method in ("copy", "executemany"):
        for batch_size in BATCH_SIZES:
            endpoint_id += 1
            rows = make_rows(endpoint_id, rows_per_case)
            batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            started = time.perf_counter()
            for batch in batches:
                if method == "copy":
                    await repo.write_statuses(batch)
                else:
                    async with repo.pool.acquire() as conn:
                        await conn.executemany(INSERT, records(batch))
            elapsed = time.perf_counter() - started
            results[method][str(batch_size)] = round(len(rows) / elapsed)
    endpoint_id += 1
    writer = StatusWriter(repo, batch_size=1000, flush_interval=1.0, queue_size=rows_per_case)
    await writer.start()
    rows = make_rows(endpoint_id, rows_per_case)
    started = time.perf_counter()
    for row in rows:
        writer.submit(row)
    submitted = time.perf_counter() - started
    await writer.stop(timeout=120)
    elapsed = time.perf_counter() - started
    assert writer.stats.written == rows_per_case, writer.stats
    return {
        **results,
        "writer_1000": round(rows_per_case / elapsed),
        "submit_us_per_row": round(submitted / rows_per_case * 1e6, 3),
    }


async def run(dsn: str | None, rows_per_case: int) -> dict[str, Any]:
    embedded: EmbeddedPostgres | None = None
    state_dir: Path | None = None
    if dsn is None:
        state_dir = Path(tempfile.mkdtemp(prefix="availmon-bench-"))
        embedded = EmbeddedPostgres(state_dir)
        dsn = await embedded.start()
    name = f"bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        version = await admin.fetchval("SHOW server_version")
        await admin.execute(f'CREATE DATABASE "{name}"')
        repo = await Repository.connect(dsn_with_database(dsn, name), pool_size=2)
        try:
            await apply_migrations(repo.pool)
            await repo.ensure_partitions(T0.date(), 1)
            rows_per_s = await measure(repo, rows_per_case)
        finally:
            await repo.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
        if embedded is not None:
            await embedded.stop()
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "server": "embedded" if embedded else redact_dsn(dsn),
        "server_version": version,
        "rows_per_case": rows_per_case,
        "rows_per_s": rows_per_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dsn", nargs="?", help="server DSN (default: embedded in a temp dir)")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per measurement")
    args = parser.parse_args(argv)
    # stdout carries only the result line; the store's log events go to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    result = asyncio.run(run(args.dsn, args.rows))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
