"""The Redis key layout, hash fields and event payloads (README, "Redis"). Pure: no I/O.

    {prefix}endpoints          set of endpoint ids present in the view
    {prefix}endpoint:{id}      hash: the endpoint's current status (fields: `EndpointView`)
    {prefix}meta               hash: schema_version, synced_at, endpoints, sync_id (last
                               full write of the view)
    {channel}                  pub/sub: one JSON object per event (`*_event` below)

Every value is a string; a field with no value (no outage open, nothing answered) is absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from availmon.model import Endpoint, ProbeResult, StatusRow
from availmon.state import OutageClosed, OutageOpened, StatusChanged

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class KeyLayout:
    prefix: str
    channel: str

    def endpoint(self, endpoint_id: int) -> str:
        return f"{self.prefix}endpoint:{endpoint_id}"

    @property
    def index(self) -> str:
        return f"{self.prefix}endpoints"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One endpoint's hash: what PostgreSQL has committed, plus the open outage."""

    endpoint: Endpoint
    row: StatusRow | None  # the newest committed status row
    since: datetime | None  # when the row's status began
    outage_id: int | None = None
    outage_started_at: datetime | None = None
    outage_severity: str | None = None

    def fields(self, now: datetime | None = None) -> dict[str, str]:
        spec = self.endpoint.spec
        values: dict[str, Any] = {
            "id": self.endpoint.id,
            "name": spec.name,
            "protocol": spec.protocol.value,
            "url": spec.url,
            "severity": spec.severity.value,
            "tags": json.dumps(list(spec.tags)),
            "since": self.since,
            "open_outage_id": self.outage_id,
            "outage_started_at": self.outage_started_at,
            "outage_severity": self.outage_severity,
            "updated_at": now or datetime.now(UTC),
        }
        row = self.row
        if row is not None:
            values |= {
                "status": row.status.value,
                "last_check_at": row.checked_at,
                "response_time_ms": _real(row.response_time_ms),
                "reason": row.reason.value,
                "error": row.error,
                "attempts": row.attempts,
            }
        return {key: _text(value) for key, value in values.items() if value is not None}


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return (
            value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        ).isoformat()
    return str(value)


def _real(value: float | None) -> float | None:
    # what PostgreSQL's real keeps (7 significant digits), so the view equals the stored row
    return None if value is None else float(f"{value:.7g}")


class CommittedState:
    """Per endpoint: the newest committed row, and since when its status holds.

    Fed every committed row in commit order (cheap dict updates on the writer task). A row
    older than the newest one already seen (a late batch) does not change the current status.
    """

    def __init__(self) -> None:
        self._rows: dict[int, StatusRow] = {}
        self._since: dict[int, datetime] = {}

    def seed(self, row: StatusRow, since: datetime | None) -> None:
        self._rows[row.endpoint_id] = row
        self._since[row.endpoint_id] = since or row.checked_at

    def apply(self, rows: Iterable[StatusRow]) -> set[int]:
        """Take committed rows; return the ids whose current row changed."""
        changed: set[int] = set()
        for row in rows:
            previous = self._rows.get(row.endpoint_id)
            if previous is not None and row.checked_at <= previous.checked_at:
                continue
            if previous is None or previous.status is not row.status:
                self._since[row.endpoint_id] = row.checked_at
            self._rows[row.endpoint_id] = row
            changed.add(row.endpoint_id)
        return changed

    def row(self, endpoint_id: int) -> StatusRow | None:
        return self._rows.get(endpoint_id)

    def since(self, endpoint_id: int) -> datetime | None:
        return self._since.get(endpoint_id)


def _event(kind: str, endpoint: Endpoint, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "type": kind,
        "endpoint_id": endpoint.id,
        "endpoint_name": endpoint.name,
        "at": at.isoformat(),
        **fields,
    }


def status_changed_event(
    endpoint: Endpoint, change: StatusChanged, result: ProbeResult
) -> dict[str, Any]:
    return _event(
        "status_changed",
        endpoint,
        change.at,
        previous=change.previous.value if change.previous else None,
        status=change.current.value,
        reason=result.reason.value,
        error=result.error,
        response_time_ms=result.response_time_ms,
    )


def outage_opened_event(
    endpoint: Endpoint, outage_id: int | None, opened: OutageOpened
) -> dict[str, Any]:
    return _event(
        "outage_opened",
        endpoint,
        opened.opened_at,
        outage_id=outage_id,
        severity=opened.severity.value,
        started_at=opened.started_at.isoformat(),
        reason=opened.reason,
        error=opened.error,
    )


def outage_closed_event(
    endpoint: Endpoint, outage_id: int | None, closed: OutageClosed, at: datetime
) -> dict[str, Any]:
    return _event(
        "outage_closed",
        endpoint,
        at,
        outage_id=outage_id,
        started_at=closed.started_at.isoformat(),
        ended_at=closed.ended_at.isoformat(),
        duration_s=(closed.ended_at - closed.started_at).total_seconds(),
    )


def resync_event(endpoints: int, reason: str, at: datetime | None = None) -> dict[str, Any]:
    """After Redis was away (events were missed) or a rebuild: re-read the hashes."""
    return {
        "v": SCHEMA_VERSION,
        "type": "resync",
        "at": (at or datetime.now(UTC)).isoformat(),
        "endpoints": endpoints,
        "reason": reason,
    }


def encode(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


__all__ = [
    "SCHEMA_VERSION",
    "CommittedState",
    "EndpointView",
    "KeyLayout",
    "encode",
    "outage_closed_event",
    "outage_opened_event",
    "resync_event",
    "status_changed_event",
]
