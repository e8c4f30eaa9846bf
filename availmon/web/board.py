"""What the status page shows, as plain data: filters, status groups (failing first), rows and
banners. Pure: the handler gathers the inputs (web/page.py).

Scale: the page never renders every endpoint of a large fleet. Endpoints are grouped by status
(DOWN, DEGRADED, UNKNOWN, MAINTENANCE, UP); each group shows at most `per_page` rows with a link
to the rest (`?status=...&page=N` pages through one group). Failing groups are open; the UP and
MAINTENANCE groups are collapsed (<details>) when the view holds more than `open_limit`
endpoints. So at 10,000 endpoints a page holds at most 5 x per_page rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from availmon.charts import History
from availmon.maintenance import Occurrence
from availmon.model import Severity, StatusRow
from availmon.status_view import EndpointNow
from availmon.store.outages import OutageRecord

STATUS_ORDER = ("DOWN", "DEGRADED", "UNKNOWN", "MAINTENANCE", "UP")
FAILING = frozenset({"DOWN", "DEGRADED", "UNKNOWN"})
RANK = {Severity.CRITICAL: 0, Severity.HIGH: 1, Severity.MEDIUM: 2, Severity.LOW: 3}
PER_PAGE = 50
OPEN_LIMIT = 100
MAX_OUTAGE_BANNERS = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def status_key(e: EndpointNow) -> str:
    return e.status.value if e.status is not None else "UNKNOWN"


@dataclass(frozen=True)
class Filters:
    tag: str | None = None
    status: str | None = None
    q: str | None = None  # a part of the name, any case
    page: int = 1

    def query(self, **changes: str | int | None) -> str:
        """ "?tag=..&status=.." of these filters with `changes` applied (None drops a key)."""
        values: dict[str, str | int | None] = {
            "tag": self.tag, "status": self.status, "q": self.q, "page": None,
        }  # fmt: skip
        values.update(changes)
        pairs = [(k, str(v)) for k, v in values.items() if v not in (None, "", 1)]
        return "?" + urlencode(pairs) if pairs else "?"

    def matches(self, e: EndpointNow) -> bool:
        if self.tag is not None and self.tag not in e.tags:
            return False
        return self.q is None or self.q.casefold() in e.name.casefold()


@dataclass
class Row:
    e: EndpointNow
    status: str
    response_time_ms: float | None
    reason: str | None
    error: str | None
    history: History | None = None


@dataclass
class Group:
    status: str
    total: int
    rows: list[Row]
    page: int
    pages: int
    open: bool

    @property
    def more(self) -> int:
        return self.total - len(self.rows)


@dataclass
class Board:
    groups: list[Group]
    counts: dict[str, int]  # per status, in the view before the status filter
    total: int  # every watched endpoint
    tags: list[str]
    filters: Filters
    per_page: int = PER_PAGE
    rows_by_id: dict[int, Row] = field(default_factory=dict)

    @property
    def shown_ids(self) -> list[int]:
        return list(self.rows_by_id)


def _order(status: str, rows: list[EndpointNow]) -> list[EndpointNow]:
    if status in FAILING:  # the most severe first, then the longest failing

        def key(e: EndpointNow) -> tuple[int, bool, datetime, str]:
            return RANK[e.severity], e.since is None, e.since or _EPOCH, e.name

        return sorted(rows, key=key)
    return sorted(rows, key=lambda e: e.name)


def build_board(
    snapshot: Sequence[EndpointNow],
    filters: Filters,
    per_page: int = PER_PAGE,
    open_limit: int = OPEN_LIMIT,
) -> Board:
    by_status: dict[str, list[EndpointNow]] = {s: [] for s in STATUS_ORDER}
    tags: set[str] = set()
    for e in snapshot:
        tags.update(e.tags)
        if filters.matches(e):
            by_status[status_key(e)].append(e)
    counts = {s: len(v) for s, v in by_status.items()}
    in_view = sum(counts.values())
    board = Board([], counts, len(snapshot), sorted(tags), filters, per_page)
    for status in STATUS_ORDER:
        members = by_status[status]
        if not members or (filters.status is not None and filters.status != status):
            continue
        pages = max(1, -(-len(members) // per_page))
        page = min(filters.page, pages) if filters.status == status else 1
        chosen = _order(status, members)[(page - 1) * per_page : page * per_page]
        rows = [Row(e, status, e.response_time_ms, e.reason, e.error) for e in chosen]
        board.rows_by_id.update((r.e.id, r) for r in rows)
        is_open = status in FAILING or filters.status == status or in_view <= open_limit
        board.groups.append(Group(status, len(members), rows, page, pages, is_open))
    return board


def attach(board: Board, history: Mapping[int, History], latest: Mapping[int, StatusRow]) -> None:
    """Add each row's history, and the stored last check where the daemon has not checked the
    endpoint since it started (its state was restored from PostgreSQL)."""
    for endpoint_id, row in board.rows_by_id.items():
        row.history = history.get(endpoint_id)
        stored = latest.get(endpoint_id)
        if row.reason is None and stored is not None:
            row.response_time_ms = stored.response_time_ms
            row.reason = stored.reason.value
            row.error = stored.error


@dataclass(frozen=True)
class OutageBanner:
    outage: OutageRecord
    name: str
    status: str


@dataclass(frozen=True)
class MaintenanceBanner:
    occurrence: Occurrence
    running: bool
    target: str


def outage_banners(
    outages: Iterable[OutageRecord], current: Mapping[int, EndpointNow]
) -> list[OutageBanner]:
    """Open outages, the most severe first, then the oldest."""
    banners = []
    for o in sorted(outages, key=lambda o: (RANK[o.severity], o.started_at)):
        e = current.get(o.endpoint_id)
        name = e.name if e else f"endpoint {o.endpoint_id}"
        banners.append(OutageBanner(o, name, status_key(e) if e else "DOWN"))
    return banners


def maintenance_banners(
    occurrences: Iterable[Occurrence], now: datetime, current: Mapping[int, EndpointNow]
) -> list[MaintenanceBanner]:
    banners = []
    for o in occurrences:
        w = o.window
        if w.applies_to_all:
            target = "all endpoints"
        elif w.endpoint_id is not None:
            e = current.get(w.endpoint_id)
            target = e.name if e else f"endpoint {w.endpoint_id}"
        else:
            target = "endpoints tagged " + ", ".join(w.tags)
        banners.append(MaintenanceBanner(o, o.start <= now, target))
    return banners
