"""PostgreSQL repository: endpoints, status history (store/statuses.py), outages
(store/outages.py), maintenance windows (store/maintenance.py) and the status page's chart
queries (store/charts.py) over one asyncpg pool.

All SQL takes its values as parameters; the only text put into SQL is fixed column lists and
partition names built from `date` objects. Database failures surface as StorageError (the
asyncpg exception is its __cause__); Conflict and NotFound are raised for the caller's input.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError

from availmon.errors import Conflict, NotFound, StorageError
from availmon.model import Endpoint, EndpointSource
from availmon.specs import AnyEndpoint, validate_stored
from availmon.spectext import unstorable
from availmon.store.charts import ChartQueries
from availmon.store.maintenance import MaintenanceStore
from availmon.store.outages import OutageHistory
from availmon.store.pg import init_connection, redact_dsn, storage_errors
from availmon.store.statuses import StatusHistory

log = structlog.get_logger("availmon.store")

SYNC_LOCK_KEY = 0x61766D6E_73796E63  # "avmnsync": one config sync at a time
_ENDPOINT_SELECT = "id, spec, source"
_INSERT_ENDPOINT = (
    "INSERT INTO endpoints (name, protocol, url, spec, is_active, severity, tags, source) "
    f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_ENDPOINT_SELECT}"
)
_UPDATE_ENDPOINT = (
    "UPDATE endpoints SET name = $2, protocol = $3, url = $4, spec = $5, is_active = $6, "
    "severity = $7, tags = $8, updated_at = now() "
    f"WHERE id = $1 AND deleted_at IS NULL RETURNING {_ENDPOINT_SELECT}"
)


def _endpoint(row: Any) -> Endpoint:
    try:
        spec = validate_stored(row["spec"])
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


def _name_taken(name: str) -> Conflict:
    return Conflict(f"name: an endpoint named {name!r} already exists")


class Repository(StatusHistory, OutageHistory, MaintenanceStore, ChartQueries):
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
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            # ValueError: a DSN asyncpg cannot parse ("host:notaport")
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

    @storage_errors
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
            # the spec of a config endpoint is `wanted`'s: not fetched and decoded again
            result = await conn.fetch(
                "SELECT id, source, name, CASE WHEN source = 'config' AND name = ANY($1::text[]) "
                "THEN NULL ELSE spec END AS spec FROM endpoints "
                "WHERE deleted_at IS NULL ORDER BY id",
                list(wanted),
            )
        log.info(
            "endpoints_synced",
            created=len(inserts),
            updated=len(updates),
            deactivated=len(gone),
            total=len(result),
        )
        # a config endpoint's stored spec is now exactly `wanted`'s: keep that object rather
        # than decode and validate the JSON again (at 10,000 endpoints: ~15 MB and ~1.3 s of
        # start-up, measured)
        return [
            Endpoint(id=row["id"], spec=wanted[row["name"]], source=EndpointSource.CONFIG)
            if row["spec"] is None
            else _endpoint(row)
            for row in result
        ]

    @storage_errors
    async def list_endpoints(self, include_inactive: bool = True) -> list[Endpoint]:
        rows = await self._pool.fetch(
            f"SELECT {_ENDPOINT_SELECT} FROM endpoints "
            "WHERE deleted_at IS NULL AND (is_active OR $1) ORDER BY id",
            include_inactive,
        )
        return [_endpoint(row) for row in rows]

    @storage_errors
    async def get_endpoint(self, endpoint_id: int) -> Endpoint:
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_SELECT} FROM endpoints WHERE id = $1 AND deleted_at IS NULL",
            endpoint_id,
        )
        if row is None:
            raise NotFound(f"endpoint {endpoint_id} does not exist")
        return _endpoint(row)

    @storage_errors
    async def get_endpoint_by_name(self, name: str) -> Endpoint | None:
        if unstorable(name):  # NUL, a lone surrogate: PostgreSQL refuses them, none is stored
            return None
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_SELECT} FROM endpoints WHERE name = $1 AND deleted_at IS NULL",
            name,
        )
        return None if row is None else _endpoint(row)

    @storage_errors
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

    @storage_errors
    async def update_endpoint(self, endpoint_id: int, spec: AnyEndpoint) -> Endpoint:
        """Replace the spec (the source stays as it was)."""
        try:
            row = await self._pool.fetchrow(_UPDATE_ENDPOINT, endpoint_id, *_endpoint_values(spec))
        except asyncpg.UniqueViolationError:
            raise _name_taken(spec.name) from None
        if row is None:
            raise NotFound(f"endpoint {endpoint_id} does not exist")
        return _endpoint(row)

    @storage_errors
    async def delete_endpoint(self, endpoint_id: int) -> None:
        """Soft delete: the row and its statuses and outages stay; the name becomes free."""
        result = await self._pool.execute(
            "UPDATE endpoints SET deleted_at = now(), is_active = false, updated_at = now() "
            "WHERE id = $1 AND deleted_at IS NULL",
            endpoint_id,
        )
        if result == "UPDATE 0":
            raise NotFound(f"endpoint {endpoint_id} does not exist")
