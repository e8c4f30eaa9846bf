"""The Elasticsearch sync state in PostgreSQL (sql/0003_es_sync.sql explains the design).

status_commits holds one row per writer transaction not yet indexed; es_failed the rows
Elasticsearch refused for their content. Nothing here updates a status row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from availmon.model import Reason, Status, StatusRow
from availmon.search.template import EndpointMeta
from availmon.store.pg import storage_errors
from availmon.store.statuses import STATUS_COLUMNS

log = structlog.get_logger("availmon.search")
_COLUMNS = ", ".join(f"s.{c}" for c in STATUS_COLUMNS)


@dataclass(frozen=True, slots=True)
class Commit:
    xid: int
    rows: int
    first_checked_at: datetime
    last_checked_at: datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    row: StatusRow
    index: str
    doc_id: str
    status: int
    error_type: str | None
    error: str


@dataclass(frozen=True, slots=True)
class Backlog:
    commits: int
    rows: int
    oldest_checked_at: datetime | None
    waiting_s: float = 0.0  # how long the oldest pending commit has waited


def _real(value: float | None) -> float | None:
    # float4 read back as a double shows noise; 7 significant digits is what a real holds
    return None if value is None else float(f"{value:.7g}")


def _row(record: Any) -> StatusRow:
    values = {c: record[c] for c in STATUS_COLUMNS}
    values.update(
        status=Status(record["status"]),
        reason=Reason(record["reason"]),
        response_time_ms=_real(record["response_time_ms"]),
    )
    return StatusRow(**values)


def _commit(record: Any) -> Commit:
    return Commit(
        record["commit_xid"],
        record["row_count"],
        record["first_checked_at"],
        record["last_checked_at"],
    )


class Outbox:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @storage_errors
    async def set_tracking(self, enabled: bool) -> None:
        """Turn commit tracking on (kept on, no write, if it is) or off."""
        if enabled:
            await self._pool.execute(
                "UPDATE es_sync SET enabled = true, updated_at = now(), "
                "tracked_from_xid = pg_current_xact_id()::text::bigint "
                "WHERE NOT enabled OR tracked_from_xid IS NULL"
            )
        else:
            await self._pool.execute(
                "UPDATE es_sync SET enabled = false, tracked_from_xid = NULL, updated_at = now() "
                "WHERE enabled"
            )

    @storage_errors
    async def identify(self, batches: Sequence[Sequence[StatusRow]]) -> list[int | None]:
        """For each batch the writer reported committed: the pending commit that holds exactly
        those rows, or None (split by the writer, partly rejected, already indexed...).

        Exact because a commit's rows are a subset of the batch it came from: its first and
        last rows belong to it and its row count equals the batch's length.
        """
        if not batches:
            return []
        args: tuple[list[Any], ...] = ([], [], [], [], [], [])
        for i, batch in enumerate(batches):
            for column, value in zip(
                args,
                (i, batch[0].endpoint_id, batch[0].checked_at, batch[-1].endpoint_id,
                 batch[-1].checked_at, len(batch)),
                strict=True,
            ):  # fmt: skip
                column.append(value)
        records = await self._pool.fetch(
            "SELECT b.i, c.commit_xid FROM unnest($1::int[], $2::bigint[], $3::timestamptz[], "
            "$4::bigint[], $5::timestamptz[], $6::int[]) AS b(i, e1, t1, e2, t2, n) "
            "JOIN statuses f ON f.endpoint_id = b.e1 AND f.checked_at = b.t1 "
            "JOIN statuses l ON l.endpoint_id = b.e2 AND l.checked_at = b.t2 "
            " AND l.commit_xid = f.commit_xid "
            "JOIN status_commits c ON c.commit_xid = f.commit_xid AND c.row_count = b.n",
            *args,
        )
        found: list[int | None] = [None] * len(batches)
        for record in records:
            found[record["i"]] = record["commit_xid"]
        return found

    @storage_errors
    async def pending(
        self, limit: int, *, skip: Sequence[int] = (), settled_s: float = 0.0
    ) -> list[Commit]:
        """The oldest pending commits (by transaction id), leaving out `skip` and those
        committed less than `settled_s` ago (the live path is about to take them)."""
        records = await self._pool.fetch(
            "SELECT commit_xid, row_count, first_checked_at, last_checked_at FROM status_commits "
            "WHERE NOT (commit_xid = ANY($1::bigint[])) "
            "AND created_at <= now() - make_interval(secs => $2) "
            "ORDER BY commit_xid LIMIT $3",
            list(skip),
            settled_s,
            limit,
        )
        return [_commit(r) for r in records]

    @storage_errors
    async def rows(self, commits: Sequence[Commit]) -> list[StatusRow]:
        """Read the rows of these commits back, oldest first."""
        if not commits:
            return []
        records = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM statuses s WHERE s.commit_xid = ANY($1::bigint[]) "
            "AND s.checked_at >= $2 AND s.checked_at <= $3 ORDER BY s.checked_at, s.endpoint_id",
            [c.xid for c in commits],
            min(c.first_checked_at for c in commits),
            max(c.last_checked_at for c in commits),
        )
        return [_row(r) for r in records]

    async def summarize(self) -> int:
        """Summarize new BRIN ranges of commit_xid, so reading a backlog back scans only its
        own pages (an unsummarized range matches every query). Best effort: returns the
        ranges summarized, 0 when the lock was busy (autovacuum on it) or it failed."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '1s'")
                summarized: int = await conn.fetchval(
                    "SELECT coalesce(sum(brin_summarize_new_values(i.inhrelid)), 0) "
                    "FROM pg_inherits i "
                    "WHERE i.inhparent = 'statuses_commit_xid_brin'::regclass"
                )
                return summarized
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.debug("es_brin_summarize_skipped", error=repr(exc))
            return 0

    @storage_errors
    async def finish(self, xids: Sequence[int], rejected: Sequence[Rejected] = ()) -> None:
        """These commits are done: every row indexed, or recorded in es_failed."""
        async with self._pool.acquire() as conn, conn.transaction():
            if rejected:
                await conn.executemany(
                    "INSERT INTO es_failed (endpoint_id, checked_at, index_name, doc_id, status, "
                    "error_type, error) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                    "ON CONFLICT (endpoint_id, checked_at) DO UPDATE SET "
                    "index_name = EXCLUDED.index_name, status = EXCLUDED.status, "
                    "error_type = EXCLUDED.error_type, error = EXCLUDED.error, failed_at = now()",
                    [
                        (r.row.endpoint_id, r.row.checked_at, r.index, r.doc_id, r.status,
                         r.error_type, r.error)
                        for r in rejected
                    ],
                )  # fmt: skip
            await conn.execute(
                "DELETE FROM status_commits WHERE commit_xid = ANY($1::bigint[])", list(xids)
            )

    @storage_errors
    async def backlog(self) -> Backlog:
        record = await self._pool.fetchrow(
            "SELECT count(*) AS commits, coalesce(sum(row_count), 0) AS rows, "
            "min(first_checked_at) AS oldest, "
            "coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS waiting "
            "FROM status_commits"
        )
        return Backlog(record["commits"], int(record["rows"]), record["oldest"], record["waiting"])

    @storage_errors
    async def failed_count(self) -> int:
        count: int = await self._pool.fetchval("SELECT count(*) FROM es_failed")
        return count

    @storage_errors
    async def endpoints(self, ids: Sequence[int]) -> dict[int, EndpointMeta]:
        """Endpoint facts for documents, deleted endpoints included."""
        records = await self._pool.fetch(
            "SELECT id, name, protocol, url, severity, tags FROM endpoints "
            "WHERE id = ANY($1::bigint[])",
            list(ids),
        )
        return {
            r["id"]: EndpointMeta(
                r["id"], r["name"], r["protocol"], r["url"], r["severity"], tuple(r["tags"])
            )
            for r in records
        }
