"""The status summary (`GET /api/v1/status`), cheap at 10,000 endpoints.

Serialising every endpoint on every request cost ~400 ms of event-loop time at 10,000
endpoints (measured), enough for a polling dashboard to stall the checks. Each endpoint's JSON
fragment is kept and rebuilt only when the monitor says its state changed (a new result, an
outage change) or the set of endpoints or a spec changed, so a request costs the rebuilt
fragments and a join. Comparing a change key per endpoint on every request still cost ~18 ms
at 10,000 endpoints (measured), hence the monitor's change listener.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from availmon.logs import get_logger
from availmon.model import Reason, Severity, Status

if TYPE_CHECKING:
    from availmon.runner import Watched

log = get_logger("availmon.status_view")

REFRESH_S = 1.0
SLICE = 1_000  # fragments built between two turns of the loop (~3-5 ms, measured)


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


_quote = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str (C)
# the enums' JSON, built once: a fragment is rebuilt after every check
_QUOTED: dict[Any, str] = {m: _quote(m.value) for e in (Status, Reason, Severity) for m in e}


def _dynamic_json(w: Watched) -> bytes:
    """`_dumps(_dynamic(w))[1:]`, written out: this runs after every check that someone may
    read, and building the dict and encoding it cost ~11 us an endpoint (measured; 110 ms for
    10,000 at once). A unit test holds the two byte for byte."""
    state = w.machine.state
    last = w.last_result
    status = state.status
    outage = "null"
    if state.outage_open:
        severity = state.outage_severity
        outage = (
            f'{{"id":{_number(w.outage_id)},'
            f'"severity":{_QUOTED[severity] if severity else "null"},'
            f'"started_at":{_iso_json(state.outage_started_at)}}}'
        )
    if last is None:
        tail = '"response_time_ms":null,"reason":null,"error":null'
    else:
        error = last.error
        tail = (
            f'"response_time_ms":{_number(last.response_time_ms)},'
            f'"reason":{_QUOTED[last.reason]},'
            f'"error":{"null" if error is None else _quote(error)}'
        )
    return (
        f'"status":{_QUOTED[status] if status else "null"},'
        f'"since":{_iso_json(state.status_since)},'
        f'"last_check_at":{_iso_json(state.last_check_at)},'
        f'{tail},"open_outage":{outage}}}'
    ).encode()


def _iso_json(value: datetime | None) -> str:
    return f'"{value.isoformat()}"' if value else "null"


def _number(value: float | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return _ENCODER.encode(value)  # NaN / Infinity, as json.dumps writes them
    return repr(value)


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

    @property
    def generation(self) -> int:
        """The Monitor.generation the fragments were built for (-1: never built)."""
        return self._generation

    def changed(self, endpoint_id: int) -> None:
        """The monitor's change listener: O(1), the work waits for the next request."""
        self._dirty.add(endpoint_id)

    def bring_current(self, watched: list[Watched], generation: int) -> Counter[str]:
        """Apply what changed since the last call; the counts per status, current.
        `generation` is Monitor.generation, `watched` its endpoints."""
        if generation != self._generation:
            self._rebuild(watched, generation)
            self._dirty.clear()
        else:
            self._apply_changes()
        return self._counts

    def joined(self, before: bytes, after: bytes) -> bytes:
        """`before + the JSON array of every endpoint's state sorted by name + after`, as of
        the last bring_current(), in one copy: the array is 14.5 MB at 50,000
        endpoints, and concatenating it into a document copied it twice more per request."""
        parts = self._parts
        if not parts:
            return before + b"[]" + after
        pieces = parts.copy()  # references only
        pieces[0] = before + b"[" + pieces[0]
        pieces[-1] = pieces[-1] + b"]" + after
        return b",".join(pieces)

    async def keep_current(
        self, source: Callable[[], tuple[list[Watched], int]], period_s: float = REFRESH_S
    ) -> None:
        """Between requests, every `period_s`: rebuild after the set changed (in slices, the
        loop runs checks in between) and refresh what changed, so a request finds at most one
        period of changes to apply. Without it the first request after a quiet spell redid
        every fragment at once (110 ms at 10,000 endpoints, measured): the API's p99."""
        while True:
            await asyncio.sleep(period_s)
            try:
                watched, generation = source()
                if generation != self._generation:
                    await self._rebuild_in_slices(watched, generation)
                else:
                    await self._apply_changes_in_slices()
            except Exception:  # a bug here must not end the refresh; requests still rebuild
                log.exception("status_view_refresh_failed")

    def _apply_changes(self) -> None:
        if not self._dirty:
            return
        for endpoint_id in self._dirty:
            position = self._position.get(endpoint_id)
            if position is not None:
                self._refresh(position)
        self._dirty.clear()

    async def _apply_changes_in_slices(self) -> None:
        """_apply_changes, SLICE fragments at a time: after a round of checks at 50,000
        endpoints every one of them has changed, and redoing them at once held the loop
        120 ms (measured). A request in between applies the rest itself."""
        dirty = self._dirty
        while dirty:
            for _ in range(min(SLICE, len(dirty))):
                position = self._position.get(dirty.pop())
                if position is not None:
                    self._refresh(position)
            await asyncio.sleep(0)

    async def _rebuild_in_slices(self, watched: list[Watched], generation: int) -> None:
        order = sorted(watched, key=_name)
        prefixes: list[bytes] = []
        parts: list[bytes] = []
        statuses: list[str] = []
        for start in range(0, len(order), SLICE):
            for w in order[start : start + SLICE]:
                prefix = _dumps(_static(w))[:-1] + b","
                prefixes.append(prefix)
                parts.append(prefix + _dynamic_json(w))
                statuses.append(_status_name(w))
            await asyncio.sleep(0)
        if self._generation >= generation:
            return  # a request rebuilt it meanwhile, from newer state
        # endpoints that changed while this was built are still in _dirty: their fragments and
        # statuses (and so the counts) are brought up to date when it is next applied
        self._install(order, prefixes, parts, generation, statuses)

    def _rebuild(self, watched: list[Watched], generation: int) -> None:
        order = sorted(watched, key=_name)
        prefixes = [_dumps(_static(w))[:-1] + b"," for w in order]
        parts = [prefix + _dynamic_json(w) for prefix, w in zip(prefixes, order, strict=True)]
        self._install(order, prefixes, parts, generation)

    def _install(
        self,
        order: list[Watched],
        prefixes: list[bytes],
        parts: list[bytes],
        generation: int,
        statuses: list[str] | None = None,
    ) -> None:
        self._order = order
        self._position = {w.endpoint.id: i for i, w in enumerate(order)}
        self._prefixes = prefixes
        self._parts = parts
        self._statuses = statuses if statuses is not None else [_status_name(w) for w in order]
        self._counts = Counter(self._statuses)
        self._generation = generation

    def _refresh(self, position: int) -> None:
        w = self._order[position]
        self._parts[position] = self._prefixes[position] + _dynamic_json(w)
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
