"""Maintenance windows in PostgreSQL (mixed into Repository). Windows are few and read once at
start into a MaintenanceCalendar; the check path never queries this table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from availmon.errors import FieldError, NotFound, ValidationFailed
from availmon.maintenance import MaintenanceConfig, MaintenanceWindow, WindowInput
from availmon.model import Endpoint
from availmon.store.pg import storage_errors

log = structlog.get_logger("availmon.store")

_COLUMNS = (
    "id, name, description, source, start_time, end_time, is_active, endpoint_id, tags, "
    "applies_to_all, cron, duration, timezone"
)
_VALUES = (
    "name, description, start_time, end_time, is_active, endpoint_id, tags, applies_to_all, "
    "cron, duration, timezone, endpoint_name, source"
)
_INSERT = (
    f"INSERT INTO maintenance_windows ({_VALUES}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
    f"RETURNING {_COLUMNS}"
)
_UPDATE = (
    "UPDATE maintenance_windows SET name = $2, description = $3, start_time = $4, "
    "end_time = $5, is_active = $6, endpoint_id = $7, tags = $8, applies_to_all = $9, "
    "cron = $10, duration = $11, timezone = $12, endpoint_name = $13, updated_at = now() "
    f"WHERE id = $1 RETURNING {_COLUMNS}"
)


def _window(row: Any) -> MaintenanceWindow:
    values = dict(row)
    values["tags"] = tuple(values["tags"])
    return MaintenanceWindow(**values)


def _values(
    spec: MaintenanceConfig | WindowInput, endpoint_id: int | None, endpoint_name: str | None
) -> tuple[Any, ...]:
    return (
        spec.name,
        spec.description,
        spec.start_time,
        spec.end_time,
        spec.is_active,
        endpoint_id,
        list(spec.tags),
        spec.applies_to_all,
        spec.cron,
        spec.duration,
        spec.timezone,
        endpoint_name,
    )


class MaintenanceStore:
    _pool: Any

    @storage_errors
    async def list_windows(self) -> list[MaintenanceWindow]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM maintenance_windows ORDER BY id")
        return [_window(row) for row in rows]

    @storage_errors
    async def get_window(self, window_id: int) -> MaintenanceWindow:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM maintenance_windows WHERE id = $1", window_id
        )
        if row is None:
            raise NotFound(f"maintenance window {window_id} does not exist")
        return _window(row)

    async def _check_endpoint(self, conn: Any, endpoint_id: int | None) -> None:
        if endpoint_id is None:
            return
        found = await conn.fetchval(
            "SELECT 1 FROM endpoints WHERE id = $1 AND deleted_at IS NULL", endpoint_id
        )
        if found is None:
            raise ValidationFailed(
                "invalid maintenance window",
                [FieldError("endpoint_id", f"endpoint {endpoint_id} does not exist")],
            )

    @storage_errors
    async def create_window(self, spec: WindowInput) -> MaintenanceWindow:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._check_endpoint(conn, spec.endpoint_id)
            row = await conn.fetchrow(_INSERT, *_values(spec, spec.endpoint_id, None), "api")
        return _window(row)

    @storage_errors
    async def update_window(self, window_id: int, spec: WindowInput) -> MaintenanceWindow:
        async with self._pool.acquire() as conn, conn.transaction():
            await self._check_endpoint(conn, spec.endpoint_id)
            values = _values(spec, spec.endpoint_id, None)
            row = await conn.fetchrow(_UPDATE, window_id, *values)
        if row is None:
            raise NotFound(f"maintenance window {window_id} does not exist")
        return _window(row)

    @storage_errors
    async def delete_window(self, window_id: int) -> None:
        result = await self._pool.execute(
            "DELETE FROM maintenance_windows WHERE id = $1", window_id
        )
        if result == "DELETE 0":
            raise NotFound(f"maintenance window {window_id} does not exist")

    @storage_errors
    async def sync_config_windows(
        self, windows: Sequence[MaintenanceConfig], endpoints: Sequence[Endpoint]
    ) -> list[MaintenanceWindow]:
        """Make the config-owned windows match the file (by name); return every window.

        An `endpoint` name is resolved against the live endpoints now; a name that matches
        none is logged and the window applies to nothing until a restart finds it.
        """
        ids = {e.name: e.id for e in endpoints}
        async with self._pool.acquire() as conn, conn.transaction():
            existing = {
                row["name"]: row["id"]
                for row in await conn.fetch(
                    "SELECT id, name FROM maintenance_windows WHERE source = 'config' FOR UPDATE"
                )
            }
            for spec in windows:
                endpoint_id = ids.get(spec.endpoint) if spec.endpoint else None
                if spec.endpoint and endpoint_id is None:
                    log.error(
                        "maintenance_endpoint_unknown", window=spec.name, endpoint=spec.endpoint
                    )
                values = _values(spec, endpoint_id, spec.endpoint)
                if spec.name in existing:
                    await conn.execute(_UPDATE, existing.pop(spec.name), *values)
                else:
                    await conn.execute(_INSERT, *values, "config")
            if existing:
                await conn.execute(
                    "DELETE FROM maintenance_windows WHERE id = ANY($1::bigint[])",
                    list(existing.values()),
                )
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM maintenance_windows ORDER BY id")
        log.info("maintenance_windows_synced", config=len(windows), total=len(rows))
        return [_window(row) for row in rows]
