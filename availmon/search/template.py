"""Elasticsearch documents, their ids and indices, and the index template (README,
"Elasticsearch").

One document per status row, in daily indices `{prefix}-YYYY.MM.DD` (UTC day of checked_at).
Plain time-based indices, not a data stream: a data stream refuses `index` with an explicit
id, and the deterministic id `{endpoint_id}-{checked_at in epoch microseconds}` is what makes
every retry and every re-send after a restart overwrite the same document instead of adding
one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from availmon.model import Endpoint, Status, StatusRow

TEMPLATE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# 1: the endpoint answered usably, 0: it did not; no value for MAINTENANCE and UNKNOWN, so an
# average of `available` is the availability over the checks that count.
AVAILABLE = {Status.UP: 1, Status.DEGRADED: 1, Status.DOWN: 0}

MAPPINGS: dict[str, Any] = {
    "dynamic": False,  # a field added later is kept in _source, never guessed
    "properties": {
        "@timestamp": {"type": "date"},
        "checked_at": {"type": "date_nanos"},
        "endpoint": {
            "properties": {
                "id": {"type": "long"},
                "name": {"type": "keyword"},
                "url": {"type": "keyword", "ignore_above": 2048},
                "severity": {"type": "keyword"},
                "tags": {"type": "keyword"},
            }
        },
        "protocol": {"type": "keyword"},
        "status": {"type": "keyword"},
        "reason": {"type": "keyword"},
        "available": {"type": "byte"},
        "response_time_ms": {"type": "float"},
        "attempts": {"type": "short"},
        "error": {
            "type": "text",
            "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
        },
        # probe details differ per protocol and change over time: one field, no mapping
        # explosion, no type conflict between probes
        "details": {"type": "flattened", "ignore_above": 1024},
    },
}


@dataclass(frozen=True, slots=True)
class EndpointMeta:
    id: int
    name: str
    protocol: str
    url: str
    severity: str
    tags: tuple[str, ...]

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointMeta:
        spec = endpoint.spec
        return cls(
            endpoint.id,
            spec.name,
            spec.protocol.value,
            spec.url,
            spec.severity.value,
            tuple(spec.tags),
        )


def _utc(moment: datetime) -> datetime:
    # asyncpg hands naive datetimes to PostgreSQL as UTC; read them the same way here
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def index_name(prefix: str, checked_at: datetime) -> str:
    return f"{prefix}-{_utc(checked_at):%Y.%m.%d}"


def doc_id(endpoint_id: int, checked_at: datetime) -> str:
    return f"{endpoint_id}-{(_utc(checked_at) - _EPOCH) // _MICROSECOND}"


def document(row: StatusRow, meta: EndpointMeta | None) -> dict[str, Any]:
    at = _utc(row.checked_at).isoformat()
    endpoint: dict[str, Any] = {"id": row.endpoint_id}
    if meta is not None:
        endpoint |= {
            "name": meta.name,
            "url": meta.url,
            "severity": meta.severity,
            "tags": list(meta.tags),
        }
    return {
        "@timestamp": at,
        "checked_at": at,
        "endpoint": endpoint,
        "protocol": meta.protocol if meta else None,
        "status": row.status.value,
        "reason": row.reason.value,
        "available": AVAILABLE.get(row.status),
        "response_time_ms": row.response_time_ms,
        "attempts": row.attempts,
        "error": row.error,
        "details": row.details,
    }


def template_name(prefix: str) -> str:
    return prefix


def template_body(prefix: str) -> dict[str, Any]:
    """The arguments of PUT _index_template/{prefix}."""
    return {
        "index_patterns": [f"{prefix}-*"],
        "priority": 200,
        "template": {
            "settings": {"index": {"refresh_interval": "5s"}},
            "mappings": MAPPINGS,
        },
        "meta": {"managed_by": "availmon", "version": TEMPLATE_VERSION},
    }
