"""PostgreSQL repository: endpoints, status history and outages over one asyncpg pool.

All SQL takes its values as parameters; the only text put into SQL is fixed column lists and
partition names built from `date` objects. Database failures surface as StorageError (the
asyncpg exception is its __cause__); Conflict and NotFound are raised for the caller's input.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from pydantic import ValidationError

from availmon.errors import Conflict, NotFound, StorageError
from availmon.model import (
    ENDPOINT_ADAPTER,
    AnyEndpoint,
    Endpoint,
    EndpointSource,
    Outage,
    Reason,
    Severity,
    Status,
    StatusRow,
)

log = structlog.get_logger("availmon.store")

P = ParamSpec("P")
T = TypeVar("T")

SYNC_LOCK_KEY = 0x61766D6E_73796E63  # "avmnsync": one config sync at a time
PARTITION_LOCK_KEY = 0x61766D6E_70617274  # "avmnpart": one partition creator at a time
STATUS_COLUMNS = (
    "endpoint_id", "checked_at", "status", "reason",
    "response_time_ms", "error", "attempts", "details",
)  # fmt: skip
_STATUS_SELECT = ", ".join(STATUS_COLUMNS)
_ENDPOINT_SELECT = "id, spec, source"
_OUTAGE_SELECT = "id, endpoint_id, severity, started_at, opened_at, ended_at, reason, error"
_PARTITION_NAME = re.compile(r"^statuses_(\d{8})$")
_INSERT_STATUS_IGNORING_DUPLICATES = (
    f"INSERT INTO statuses ({_STATUS_SELECT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (endpoint_id, checked_at) DO NOTHING"
)
_INSERT_ENDPOINT = (
    "INSERT INTO endpoints (name, protocol, url, spec, is_active, severity, tags, source) "
    f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_ENDPOINT_SELECT}"
)
_UPDATE_ENDPOINT = (
    "UPDATE endpoints SET name = $2, protocol = $3, url = $4, spec = $5, is_active = $6, "
    "severity = $7, tags = $8, updated_at = now() "
    f"WHERE id = $1 AND deleted_at IS NULL RETURNING {_ENDPOINT_SELECT}"
)


def _storage(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn asyncpg and socket errors into StorageError, keeping the original as __cause__."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StorageError(f"{fn.__name__}: {type(exc).__name__}: {exc}") from exc

    return wrapper


def _encode_jsonb(value: Any) -> bytes:
    # Binary jsonb is a version byte (1) then the JSON text; binary COPY needs this format.
    # default=str: a probe detail that is not JSON (a datetime, an exception) is kept as text
    # instead of making the whole batch unwritable.
    return b"\x01" + json.dumps(value, separators=(",", ":"), default=str).encode()


def _decode_jsonb(data: bytes) -> Any:
    return json.loads(data[1:])


async def init_connection(conn: Any) -> None:
    """Per-connection setup (the pool's `init=`): jsonb is passed as Python objects both ways."""
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def partition_name(day: date) -> str:
    return f"statuses_{day:%Y%m%d}"


def _utc_day(moment: datetime) -> date:
    if moment.tzinfo is None:  # asyncpg stores naive datetimes as UTC; partition the same way
        return moment.date()
    return moment.astimezone(UTC).date()


def _real(value: float | None) -> float | None:
    # float4 read back as a double shows noise (123.4 -> 123.40000152587891); 7 significant
    # digits is what a real holds, so print-and-parse restores the value that was written.
    return None if value is None else float(f"{value:.7g}")


def _endpoint(row: Any) -> Endpoint:
    try:
        spec = ENDPOINT_ADAPTER.validate_python(row["spec"])
    except ValidationError as exc:
        raise StorageError(
            f"stored spec of endpoint {row['id']} no longer validates: {exc}"
        ) from exc
    return Endpoint(id=row["id"], spec=spec, source=EndpointSource(row["source"]))


def _endpoint_values(spec: AnyEndpoint) -> tuple[Any, ...]:
    return (
        spec.name,
        spec.protocol.value,
        spec.url,
        spec.model_dump(mode="json"),
        spec.is_active,
        spec.severity.value,
        list(spec.tags),
    )


def _status(row: Any) -> StatusRow:
    values = dict(row)  # the selected columns are exactly StatusRow's fields
    values.update(
        status=Status(row["status"]),
        reason=Reason(row["reason"]),
        response_time_ms=_real(row["response_time_ms"]),
    )
    return StatusRow(**values)


def _outage(row: Any) -> Outage:
    return Outage(**{**dict(row), "severity": Severity(row["severity"])})


def _name_taken(name: str) -> Conflict:
    return Conflict(f"name: an endpoint named {name!r} already exists")


class Repository:
    """Everything the daemon stores, over one asyncpg pool (see `connect`)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, pool_size: int = 5, *, application_name: str = "availmon"
    ) -> Repository:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                init=init_connection,
                server_settings={"application_name": application_name},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {exc}") from exc
        return cls(pool)

    @property
    def pool(self) -> Any:
        return self._pool

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool; connections still busy after `timeout` s are terminated."""
        try:
            await asyncio.wait_for(self._pool.close(), timeout)
        except TimeoutError:
            self._pool.terminate()

    # -- endpoints ----------------------------------------------------------------------------

    @_storage
    async def sync_config_endpoints(self, specs: list[AnyEndpoint]) -> list[Endpoint]:
        """Make config-owned endpoints match `specs` (by name); return all live endpoints.

        Missing ones are created, changed ones updated, config-owned ones absent from `specs`
        deactivated (kept, with their history). A name held by an API-created endpoint is a
        Conflict: the config does not silently take an endpoint over.
        """
        wanted = {spec.name: spec for spec in specs}
        if len(wanted) != len(specs):
            raise ValueError("endpoint names in the config must be unique")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SYNC_LOCK_KEY)
            rows = await conn.fetch(
                "SELECT id, name, source, spec, is_active FROM endpoints "
                "WHERE deleted_at IS NULL FOR UPDATE"
            )
            existing = {row["name"]: row for row in rows}
            clashes = sorted(
                n for n in wanted if n in existing and existing[n]["source"] != "config"
            )
            if clashes:
                raise Conflict(
                    "name: endpoint(s) "
                    + ", ".join(repr(n) for n in clashes)
                    + " in the config already exist as API-created endpoints; rename one side"
                )
            inserts, updates = [], []
            for name, spec in wanted.items():
                values = _endpoint_values(spec)
                row = existing.get(name)
                if row is None:
                    inserts.append((*values, EndpointSource.CONFIG.value))
                elif row["spec"] != values[3]:
                    updates.append((row["id"], *values))
            gone = [
                (row["id"],)
                for name, row in existing.items()
                if row["source"] == "config" and name not in wanted and row["is_active"]
            ]
            if inserts:
                await conn.executemany(_INSERT_ENDPOINT, inserts)
            if updates:
                await conn.executemany(_UPDATE_ENDPOINT, updates)
            if gone:
                await conn.executemany(
                    "UPDATE endpoints SET is_active = false, updated_at = now(), "
                    "spec = jsonb_set(spec, '{is_active}', 'false') WHERE id = $1",
                    gone,
                )
            result = await conn.fetch(
                f"SELECT {_ENDPOINT_SELECT} FROM endpoints WHERE deleted_at IS NULL ORDER BY id"
            )
        log.info(
            "endpoints_synced",
            created=len(inserts),
            updated=len(updates),
            deactivated=len(gone),
            total=len(result),
        )
        return [_endpoint(row) for row in result]

    @_storage
    async def list_endpoints(self, include_inactive: bool = True) -> list[Endpoint]:
        rows = await self._pool.fetch(
            f"SELECT {_ENDPOINT_SELECT} FROM endpoints "
            "WHERE deleted_at IS NULL AND (is_active OR $1) ORDER BY id",
            include_inactive,
        )
        return [_endpoint(row) for row in rows]

    @_storage
    async def get_endpoint(self, endpoint_id: int) -> Endpoint:
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_SELECT} FROM endpoints WHERE id = $1 AND deleted_at IS NULL",
            endpoint_id,
        )
        if row is None:
            raise NotFound(f"endpoint {endpoint_id} does not exist")
        return _endpoint(row)

    @_storage
    async def get_endpoint_by_name(self, name: str) -> Endpoint | None:
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_SELECT} FROM endpoints WHERE name = $1 AND deleted_at IS NULL",
            name,
        )
        return None if row is None else _endpoint(row)

    @_storage
    async def create_endpoint(
        self, spec: AnyEndpoint, source: EndpointSource = EndpointSource.API
    ) -> Endpoint:
        try:
            row = await self._pool.fetchrow(
                _INSERT_ENDPOINT, *_endpoint_values(spec), EndpointSource(source).value
            )
        except asyncpg.UniqueViolationError:
            raise _name_taken(spec.name) from None
        return _endpoint(row)

    @_storage
    async def update_endpoint(self, endpoint_id: int, spec: AnyEndpoint) -> Endpoint:
        """Replace the spec (the source stays as it was)."""
        try:
            row = await self._pool.fetchrow(_UPDATE_ENDPOINT, endpoint_id, *_endpoint_values(spec))
        except asyncpg.UniqueViolationError:
            raise _name_taken(spec.name) from None
        if row is None:
            raise NotFound(f"endpoint {endpoint_id} does not exist")
        return _endpoint(row)

    @_storage
    async def delete_endpoint(self, endpoint_id: int) -> None:
        """Soft delete: the row and its statuses and outages stay; the name becomes free."""
        result = await self._pool.execute(
            "UPDATE endpoints SET deleted_at = now(), is_active = false, updated_at = now() "
            "WHERE id = $1 AND deleted_at IS NULL",
            endpoint_id,
        )
        if result == "UPDATE 0":
            raise NotFound(f"endpoint {endpoint_id} does not exist")

    # -- statuses -----------------------------------------------------------------------------

    @_storage
    async def write_statuses(self, rows: Sequence[StatusRow]) -> None:
        """Write rows with binary COPY; creates missing day partitions and retries once.

        A batch containing rows that are already stored (same endpoint and checked_at) is
        rewritten with INSERT ... ON CONFLICT DO NOTHING, so writing a batch twice is harmless.
        """
        if not rows:
            return
        records = [
            (
                r.endpoint_id, r.checked_at, str(r.status), str(r.reason),
                r.response_time_ms, r.error, r.attempts, r.details,
            )
            for r in rows
        ]  # fmt: skip
        partitions_created = idempotent = False
        async with self._pool.acquire() as conn:
            while True:
                try:
                    if idempotent:
                        await conn.executemany(_INSERT_STATUS_IGNORING_DUPLICATES, records)
                    else:
                        await conn.copy_records_to_table(
                            "statuses", records=records, columns=STATUS_COLUMNS
                        )
                    return
                except asyncpg.CheckViolationError as exc:
                    # "no partition of relation ... found for row" names no constraint; a real
                    # CHECK does. The message itself may be translated, so it is not used.
                    if partitions_created or exc.constraint_name is not None:
                        raise
                    await self._create_partitions(conn, {_utc_day(r.checked_at) for r in rows})
                    partitions_created = True
                except asyncpg.UniqueViolationError:
                    if idempotent:
                        raise
                    idempotent = True

    @_storage
    async def ensure_partitions(self, start: date, days_ahead: int) -> list[str]:
        """Create the daily partitions for `start` .. `start + days_ahead`; return new names."""
        days = {start + timedelta(days=i) for i in range(days_ahead + 1)}
        async with self._pool.acquire() as conn:
            return await self._create_partitions(conn, days)

    @_storage
    async def drop_partitions_before(self, cutoff: date) -> list[str]:
        """Drop whole days of history older than `cutoff`; return the dropped partitions."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'statuses'::regclass ORDER BY c.relname"
            )
            dropped = []
            for (name,) in names:
                match = _PARTITION_NAME.match(name)
                if match and datetime.strptime(match[1], "%Y%m%d").date() < cutoff:
                    await conn.execute(f"DROP TABLE {name}")
                    dropped.append(name)
        if dropped:
            log.info("partitions_dropped", partitions=dropped)
        return dropped

    async def ensure_partitions_for_today(
        self, days_ahead: int = 3, today: date | None = None
    ) -> list[str]:
        """Partitions from yesterday (late rows near midnight) to today + days_ahead (UTC)."""
        today = today or datetime.now(UTC).date()
        return await self.ensure_partitions(today - timedelta(days=1), days_ahead + 1)

    async def _create_partitions(self, conn: Any, days: set[date]) -> list[str]:
        created = []
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK_KEY)
            for day in sorted(days):
                name = partition_name(day)
                if await conn.fetchval("SELECT to_regclass($1)", name) is not None:
                    continue
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF statuses FOR VALUES "
                    f"FROM ('{day.isoformat()} 00:00:00+00') "
                    f"TO ('{(day + timedelta(days=1)).isoformat()} 00:00:00+00')"
                )
                created.append(name)
        if created:
            log.info("partitions_created", partitions=created)
        return created

    @_storage
    async def list_statuses(
        self,
        endpoint_id: int,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        before: datetime | None = None,
    ) -> list[StatusRow]:
        """Newest first; since <= checked_at <= until; `before` (exclusive) is the page cursor:
        pass the checked_at of the last row of a page to get the next one."""
        args: list[Any] = [endpoint_id]
        where = ["endpoint_id = $1"]
        for value, condition in ((since, ">="), (until, "<="), (before, "<")):
            if value is not None:
                args.append(value)
                where.append(f"checked_at {condition} ${len(args)}")
        args.append(limit)
        rows = await self._pool.fetch(
            f"SELECT {_STATUS_SELECT} FROM statuses WHERE {' AND '.join(where)} "
            f"ORDER BY checked_at DESC LIMIT ${len(args)}",
            *args,
        )
        return [_status(row) for row in rows]

    @_storage
    async def recent_statuses(
        self, endpoint_ids: Sequence[int], per_endpoint: int
    ) -> dict[int, list[StatusRow]]:
        """The last `per_endpoint` rows of each endpoint, newest first (every id is a key)."""
        rows = await self._pool.fetch(
            f"SELECT s.* FROM unnest($1::bigint[]) AS e(id) CROSS JOIN LATERAL ("
            f"  SELECT {_STATUS_SELECT} FROM statuses WHERE endpoint_id = e.id"
            "   ORDER BY checked_at DESC LIMIT $2"
            ") AS s ORDER BY s.endpoint_id, s.checked_at DESC",
            list(dict.fromkeys(endpoint_ids)),
            per_endpoint,
        )
        result: dict[int, list[StatusRow]] = {endpoint_id: [] for endpoint_id in endpoint_ids}
        for row in rows:
            result[row["endpoint_id"]].append(_status(row))
        return result

    @_storage
    async def latest_statuses(self) -> dict[int, StatusRow]:
        """The newest row of every live endpoint that has one."""
        rows = await self._pool.fetch(
            "SELECT s.* FROM endpoints e CROSS JOIN LATERAL ("
            f"  SELECT {_STATUS_SELECT} FROM statuses WHERE endpoint_id = e.id"
            "   ORDER BY checked_at DESC LIMIT 1"
            ") AS s WHERE e.deleted_at IS NULL"
        )
        return {row["endpoint_id"]: _status(row) for row in rows}

    @_storage
    async def record_status_change(self, endpoint_id: int, status: Status, since: datetime) -> None:
        """Remember when the endpoint's current status began (called on changes only)."""
        await self._pool.execute(
            "INSERT INTO endpoint_state (endpoint_id, status, since) VALUES ($1, $2, $3) "
            "ON CONFLICT (endpoint_id) DO UPDATE SET status = EXCLUDED.status, "
            "since = EXCLUDED.since, updated_at = now()",
            endpoint_id,
            status.value,
            since,
        )

    @_storage
    async def status_since(self) -> dict[int, tuple[Status, datetime]]:
        """Each endpoint's last recorded status change: (status, since)."""
        rows = await self._pool.fetch("SELECT endpoint_id, status, since FROM endpoint_state")
        return {row["endpoint_id"]: (Status(row["status"]), row["since"]) for row in rows}

    # -- outages ------------------------------------------------------------------------------

    @_storage
    async def open_outage(
        self,
        endpoint_id: int,
        severity: Severity,
        started_at: datetime,
        opened_at: datetime,
        reason: str | None = None,
        error: str | None = None,
    ) -> Outage:
        """Open an outage, or return the one already open for the endpoint."""
        async with self._pool.acquire() as conn:
            # The open outage found by the conflict may close before the SELECT sees it;
            # then the INSERT succeeds on the next round.
            for _ in range(5):
                try:
                    row = await conn.fetchrow(
                        "INSERT INTO outages (endpoint_id, severity, started_at, opened_at, "
                        "reason, error) VALUES ($1, $2, $3, $4, $5, $6) "
                        "ON CONFLICT (endpoint_id) WHERE ended_at IS NULL DO NOTHING "
                        f"RETURNING {_OUTAGE_SELECT}",
                        endpoint_id, Severity(severity).value, started_at, opened_at, reason, error,
                    )  # fmt: skip
                except asyncpg.ForeignKeyViolationError:
                    raise NotFound(f"endpoint {endpoint_id} does not exist") from None
                if row is None:
                    row = await conn.fetchrow(
                        f"SELECT {_OUTAGE_SELECT} FROM outages "
                        "WHERE endpoint_id = $1 AND ended_at IS NULL",
                        endpoint_id,
                    )
                if row is not None:
                    return _outage(row)
        raise StorageError(f"could not open an outage for endpoint {endpoint_id}")

    @_storage
    async def close_outage(self, outage_id: int, ended_at: datetime) -> None:
        """End an open outage; closing one that is already closed changes nothing."""
        result = await self._pool.execute(
            "UPDATE outages SET ended_at = $2, updated_at = now() "
            "WHERE id = $1 AND ended_at IS NULL",
            outage_id,
            ended_at,
        )
        if result == "UPDATE 0":
            await self.get_outage(outage_id)  # NotFound when it does not exist at all

    @_storage
    async def update_outage_severity(self, outage_id: int, severity: Severity) -> None:
        result = await self._pool.execute(
            "UPDATE outages SET severity = $2, updated_at = now() WHERE id = $1",
            outage_id,
            Severity(severity).value,
        )
        if result == "UPDATE 0":
            raise NotFound(f"outage {outage_id} does not exist")

    @_storage
    async def get_outage(self, outage_id: int) -> Outage:
        row = await self._pool.fetchrow(
            f"SELECT {_OUTAGE_SELECT} FROM outages WHERE id = $1", outage_id
        )
        if row is None:
            raise NotFound(f"outage {outage_id} does not exist")
        return _outage(row)

    @_storage
    async def list_outages(
        self,
        active: bool | None = None,
        endpoint_id: int | None = None,
        severity: Severity | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Outage]:
        """Newest first. `active` True: open only; False: ended only; None: both."""
        args: list[Any] = []
        where = ["true"]
        if active is not None:
            where.append("ended_at IS NULL" if active else "ended_at IS NOT NULL")
        if endpoint_id is not None:
            args.append(endpoint_id)
            where.append(f"endpoint_id = ${len(args)}")
        if severity is not None:
            args.append(str(severity))
            where.append(f"severity = ${len(args)}")
        args += [limit, offset]
        rows = await self._pool.fetch(
            f"SELECT {_OUTAGE_SELECT} FROM outages WHERE {' AND '.join(where)} "
            f"ORDER BY started_at DESC, id DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}",
            *args,
        )
        return [_outage(row) for row in rows]

    @_storage
    async def open_outages(self) -> list[Outage]:
        rows = await self._pool.fetch(
            f"SELECT {_OUTAGE_SELECT} FROM outages WHERE ended_at IS NULL ORDER BY started_at, id"
        )
        return [_outage(row) for row in rows]
