"""The status summary (`GET /api/v1/status`), cheap at 10,000 endpoints.

Serialising every endpoint on every request cost ~400 ms of event-loop time at 10,000
endpoints (measured), enough for a polling dashboard to stall the checks. Each endpoint's JSON
fragment is kept and rebuilt only when the monitor says its state changed (a new result, an
outage change) or the set of endpoints or a spec changed, so a request costs the rebuilt
fragments and a join. Comparing a change key per endpoint on every request still cost ~18 ms
at 10,000 endpoints (measured), hence the monitor's change listener.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from availmon.model import Severity, Status

if TYPE_CHECKING:
    from availmon.runner import Watched


@dataclass(frozen=True, slots=True)
class EndpointNow:
    """One watched endpoint's current state, typed (what the status page shows)."""

    id: int
    name: str
    protocol: str
    url: str
    severity: Severity
    tags: tuple[str, ...]
    status: Status | None  # None: not checked yet
    since: datetime | None
    last_check_at: datetime | None
    response_time_ms: float | None
    reason: str | None
    error: str | None
    outage_id: int | None
    outage_severity: Severity | None
    outage_started_at: datetime | None


def endpoint_now(w: Watched) -> EndpointNow:
    state, last, spec = w.machine.state, w.last_result, w.endpoint.spec
    outage_open = state.outage_open
    return EndpointNow(
        id=w.endpoint.id,
        name=w.endpoint.name,
        protocol=spec.protocol.value,
        url=spec.url,
        severity=spec.severity,
        tags=spec.tags,
        status=state.status,
        since=state.status_since,
        last_check_at=state.last_check_at,
        response_time_ms=last.response_time_ms if last else None,
        reason=last.reason.value if last else None,
        error=last.error if last else None,
        outage_id=w.outage_id if outage_open else None,
        outage_severity=state.outage_severity if outage_open else None,
        outage_started_at=state.outage_started_at if outage_open else None,
    )


def endpoint_status(w: Watched) -> dict[str, Any]:
    return _static(w) | _dynamic(w)


def _static(w: Watched) -> dict[str, Any]:
    """What only a new spec changes (and a new spec is a new Monitor.generation)."""
    spec = w.endpoint.spec
    return {
        "id": w.endpoint.id,
        "name": w.endpoint.name,
        "protocol": spec.protocol.value,
        "url": spec.url,
        "severity": spec.severity.value,
        "tags": list(spec.tags),
    }


def _dynamic(w: Watched) -> dict[str, Any]:
    state = w.machine.state
    last = w.last_result
    return {
        "status": state.status.value if state.status else None,
        "since": _iso(state.status_since),
        "last_check_at": _iso(state.last_check_at),
        "response_time_ms": last.response_time_ms if last else None,
        "reason": last.reason.value if last else None,
        "error": last.error if last else None,
        "open_outage": (
            {
                "id": w.outage_id,
                "severity": state.outage_severity.value if state.outage_severity else None,
                "started_at": _iso(state.outage_started_at),
            }
            if state.outage_open
            else None
        ),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _status_name(w: Watched) -> str:
    status = w.machine.state.status
    return status.value if status else Status.UNKNOWN.value


class StatusView:
    """Fragments in name order, rebuilt when the monitor reports an endpoint changed (a check
    finished, an outage was resolved by hand) and all at once when the set or a spec changed
    (Monitor.generation). Counts per status are kept with them."""

    def __init__(self) -> None:
        self._dirty: set[int] = set()
        self._generation = -1
        self._order: list[Watched] = []
        self._position: dict[int, int] = {}
        self._parts: list[bytes] = []
        self._prefixes: list[bytes] = []  # '{"id":..,"tags":[..],' of each endpoint
        self._statuses: list[str] = []
        self._counts: Counter[str] = Counter()
        self._body: bytes | None = None

    def changed(self, endpoint_id: int) -> None:
        """The monitor's change listener: O(1), the work waits for the next request."""
        self._dirty.add(endpoint_id)

    def endpoints_json(self, watched: list[Watched], generation: int) -> tuple[bytes, Counter[str]]:
        """(the JSON array of every watched endpoint's state sorted by name, counts per
        status); `generation` is Monitor.generation, `watched` its endpoints."""
        if generation != self._generation:
            self._rebuild(watched, generation)
        elif self._dirty:
            for endpoint_id in self._dirty:
                position = self._position.get(endpoint_id)
                if position is not None:
                    self._refresh(position)
            self._body = None
        self._dirty.clear()
        if self._body is None:
            self._body = b"[" + b",".join(self._parts) + b"]"
        return self._body, self._counts

    def _rebuild(self, watched: list[Watched], generation: int) -> None:
        self._order = sorted(watched, key=_name)
        self._position = {w.endpoint.id: i for i, w in enumerate(self._order)}
        self._prefixes = [_dumps(_static(w))[:-1] + b"," for w in self._order]
        self._parts = [
            prefix + _dumps(_dynamic(w))[1:]
            for prefix, w in zip(self._prefixes, self._order, strict=True)
        ]
        self._statuses = [_status_name(w) for w in self._order]
        self._counts = Counter(self._statuses)
        self._generation = generation
        self._body = None

    def _refresh(self, position: int) -> None:
        w = self._order[position]
        self._parts[position] = self._prefixes[position] + _dumps(_dynamic(w))[1:]
        status = _status_name(w)
        previous = self._statuses[position]
        if status != previous:
            self._counts[previous] -= 1
            self._counts[status] += 1
            self._statuses[position] = status


# one encoder: json.dumps() with any keyword argument builds a new JSONEncoder on every call
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(value: dict[str, Any]) -> bytes:
    return _ENCODER.encode(value).encode()


def _name(w: Watched) -> str:
    return w.endpoint.name


class NowView:
    """Every watched endpoint's EndpointNow, each rebuilt only when the monitor reported a
    change (the status page asks for all 10,000 to group and filter them; building them all
    every time cost ~40 ms), all of them when the set or a spec changed."""

    def __init__(self) -> None:
        self._items: dict[int, EndpointNow] = {}
        self._generation = -1

    def changed(self, endpoint_id: int) -> None:
        """The monitor's change listener."""
        self._items.pop(endpoint_id, None)

    def snapshot(self, watched: list[Watched], generation: int) -> list[EndpointNow]:
        if generation != self._generation:
            self._items = {}
            self._generation = generation
        items = self._items
        result = []
        for w in watched:
            item = items.get(w.endpoint.id)
            if item is None:
                item = items[w.endpoint.id] = endpoint_now(w)
            result.append(item)
        return result
