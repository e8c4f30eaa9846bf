"""The status summary (`GET /api/v1/status`), cheap at 10,000 endpoints.

Serialising every endpoint on every request cost ~400 ms of event-loop time at 10,000
endpoints (measured), enough for a polling dashboard to stall the checks. Each endpoint's JSON
fragment is kept and rebuilt only when its state changed (a new result, an outage change, a new
spec), so a request costs a sort and a join; fragments are rebuilt at the rate checks finish,
not the rate readers ask.
"""

from __future__ import annotations

import json
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
    state = w.machine.state
    last = w.last_result
    spec = w.endpoint.spec
    return {
        "id": w.endpoint.id,
        "name": w.endpoint.name,
        "protocol": spec.protocol.value,
        "url": spec.url,
        "severity": spec.severity.value,
        "tags": list(spec.tags),
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


def _key(w: Watched) -> tuple[Any, ...]:
    # every check leaves a new last_result; outage changes outside a check (a manual resolve)
    # change outage_id or the outage fields; a new spec is a new Endpoint object
    state = w.machine.state
    return (id(w.last_result), id(w.endpoint), w.outage_id, state.outage_started_at)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class StatusView:
    def __init__(self) -> None:
        self._fragments: dict[int, tuple[tuple[Any, ...], bytes]] = {}
        self._order: list[Watched] = []
        self._order_generation = -1

    def endpoints_json(self, watched: list[Watched], generation: int) -> bytes:
        """The JSON array of every watched endpoint's state, sorted by name; `generation`
        changes whenever the set of endpoints or a spec changes (Monitor.generation)."""
        if generation != self._order_generation:
            self._order = sorted(watched, key=_name)
            self._order_generation = generation
        fragments = self._fragments
        parts = []
        for w in self._order:
            key = _key(w)
            cached = fragments.get(w.endpoint.id)
            if cached is None or cached[0] != key:
                cached = (key, json.dumps(endpoint_status(w), separators=(",", ":")).encode())
                fragments[w.endpoint.id] = cached
            parts.append(cached[1])
        if len(fragments) > 2 * len(watched) + 100:  # endpoints removed: forget them
            live = {w.endpoint.id for w in watched}
            self._fragments = {k: v for k, v in fragments.items() if k in live}
        return b"[" + b",".join(parts) + b"]"


def _name(w: Watched) -> str:
    return w.endpoint.name


class NowView:
    """Every watched endpoint's EndpointNow, each rebuilt only when its state changed (the
    status page asks for all 10,000 to group and filter them; building them all every time
    cost ~40 ms)."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[tuple[Any, ...], EndpointNow]] = {}

    def snapshot(self, watched: list[Watched]) -> list[EndpointNow]:
        items = self._items
        result = []
        for w in watched:
            # last_check_at too: an id() in _key may be reused by a later result object
            key = (*_key(w), w.machine.state.last_check_at)
            cached = items.get(w.endpoint.id)
            if cached is None or cached[0] != key:
                cached = (key, endpoint_now(w))
                items[w.endpoint.id] = cached
            result.append(cached[1])
        if len(items) > 2 * len(watched) + 100:  # endpoints removed: forget them
            live = {w.endpoint.id for w in watched}
            self._items = {k: v for k, v in items.items() if k in live}
        return result
