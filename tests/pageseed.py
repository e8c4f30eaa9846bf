"""A seeded fleet for the status page, written straight to PostgreSQL; a daemon started on the
database afterwards restores it as after a restart.

`demo_fleet()`: 36 endpoints in every status, 90 days of hourly rollups with known bad days,
24 h of checks every 15 min, open outages (acknowledged and not, every severity) and two
maintenance windows (one running on the "db" tag, one for all endpoints in 3 days). Every
endpoint is checked once a day and points at a closed loopback port, so the daemon checks none
of them while a test runs (the first check of ids below 90 is at least 400 s away).
`large_fleet(n)`: the same shapes at scale, for bench/status_page.py.

Facts a test asserts on are in `Seeded`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from availmon.maintenance import WindowInput
from availmon.model import Reason, Severity, Status, StatusRow
from availmon.specs import ENDPOINT_ADAPTER
from availmon.store import Repository

HOUR_US = 3_600_000_000
HOUR = timedelta(hours=1)


@dataclass
class Plan:
    name: str
    status: Status = Status.UP
    protocol: str = "http"
    tags: tuple[str, ...] = ()
    severity: str = "high"
    # how long the current status has lasted: at least 3 check steps, so the stored checks
    # hold enough of them to restore it
    failing_for: timedelta = timedelta(hours=1)
    rt_ms: float = 40.0
    history_days: int = 90
    hourly: bool = True  # False: one rollup row per day (bench: endpoints it never shows)
    checks_every: timedelta = timedelta(minutes=15)
    checks_for: timedelta = timedelta(hours=24)
    outage: tuple[str, str | None] | None = None  # open outage: (severity, acknowledged_by)
    bad_hours: list[tuple[int, int, str]] = field(default_factory=list)  # (days ago, hour, kind)
    closed_outages: list[tuple[int, int, int, str]] = field(default_factory=list)
    # ^ (days ago, start hour, minutes, severity)

    @property
    def url(self) -> str:
        return {
            "http": "http://127.0.0.1:9/health",
            "https": "https://127.0.0.1:9/",
            "tcp": "tcp://127.0.0.1:9",
        }[self.protocol]


@dataclass
class Seeded:
    now: datetime
    ids: dict[str, int]
    plans: dict[str, Plan]
    windows: dict[str, int]

    def names(self, status: Status) -> list[str]:
        return [n for n, p in self.plans.items() if p.status is status]


def demo_fleet() -> list[Plan]:
    S = Status
    plans = [
        Plan("payments-api", S.DOWN, "https", ("api", "payments"), "critical",
             timedelta(hours=3), 120, outage=("critical", None),
             bad_hours=[(3, 10, "down"), (3, 11, "down")],
             closed_outages=[(3, 10, 120, "critical")]),
        Plan("search-api", S.DOWN, "https", ("api",), "high", timedelta(hours=2), 85,
             outage=("high", "alice"), bad_hours=[(10, 4, "blip"), (20, 6, "half")],
             closed_outages=[(20, 6, 30, "high")]),
        Plan("mail-relay", S.DOWN, "tcp", ("mail",), "high", timedelta(minutes=50), 9,
             outage=("high", None)),
        Plan("legacy-ftp", S.DOWN, "tcp", ("legacy",), "medium", timedelta(hours=5), 30,
             outage=("medium", "bob")),
        Plan("checkout-web", S.DEGRADED, "https", ("web", "payments"), "high",
             timedelta(minutes=70), 1900),
        Plan("cdn-edge-eu", S.DEGRADED, "https", ("web", "cdn"), "medium",
             timedelta(minutes=55), 1400),
        Plan("metrics-push", S.UNKNOWN, "tcp", ("internal",), "low", timedelta(minutes=48), 5),
        Plan("orders-db", S.MAINTENANCE, "tcp", ("db",), "critical", rt_ms=3,
             bad_hours=[(5, 2, "maintenance"), (5, 3, "maintenance")]),
        Plan("users-db", S.MAINTENANCE, "tcp", ("db",), "critical", rt_ms=4),
        Plan("reports-db", S.MAINTENANCE, "tcp", ("db",), "medium", rt_ms=6),
        Plan("new-service", S.UP, "https", ("api",), rt_ms=55, history_days=10),
    ]  # fmt: skip
    up = [
        ("web-frontend", "https", ("web",)), ("blog", "https", ("web",)),
        ("docs", "https", ("web",)), ("status-api", "http", ("api",)),
        ("graphql-gateway", "https", ("api",)), ("grpc-gateway", "tcp", ("api",)),
        ("auth-service", "https", ("api", "auth")), ("sso-login", "https", ("auth",)),
        ("billing-api", "https", ("api", "payments")), ("invoices", "https", ("payments",)),
        ("image-resizer", "http", ("media",)), ("video-transcode", "http", ("media",)),
        ("cache-redis", "tcp", ("cache",)), ("queue-rabbitmq", "tcp", ("queue",)),
        ("kafka-broker-1", "tcp", ("queue",)), ("kafka-broker-2", "tcp", ("queue",)),
        ("smtp-out", "tcp", ("mail",)), ("imap", "tcp", ("mail",)),
        ("vpn-gateway", "tcp", ("internal",)), ("git-server", "https", ("internal",)),
        ("ci-runner", "https", ("internal",)), ("wiki", "https", ("internal",)),
        ("chat", "https", ("internal",)), ("mobile-api", "https", ("api",)),
        ("partner-api", "https", ("api",)),
    ]  # fmt: skip
    for i, (name, protocol, tags) in enumerate(up):
        plans.append(Plan(name, Status.UP, protocol, tags, rt_ms=15 + (i * 37) % 160))
    return plans


def large_fleet(n: int, shown: int = 60) -> list[Plan]:
    """n endpoints: 2 % DOWN (with open outages), 0.5 % DEGRADED, 0.1 % UNKNOWN, 1 % in
    maintenance, the rest UP. Only the first `shown` of each status (by name, what the page
    shows) get hourly rollups and a check every minute; the rest one rollup row per day and
    the last few checks, enough to restore their state."""
    plans = []
    for i in range(n):
        r = i % 1000
        status = (
            Status.DOWN if r < 20 else Status.DEGRADED if r < 25 else Status.UNKNOWN
            if r < 26 else Status.MAINTENANCE if r < 36 else Status.UP
        )  # fmt: skip
        plan = Plan(f"ep-{i:05d}", status, "tcp" if i % 3 else "https", (f"team-{i % 40}",))
        plan.rt_ms = 10 + i % 90
        if status is Status.DOWN:
            plan.outage = ("high", "oncall" if i % 2 else None)
        if status is Status.MAINTENANCE:
            plan.tags = ("db",)
        plans.append(plan)
    by_status: dict[Status, list[Plan]] = {}
    for plan in plans:
        by_status.setdefault(plan.status, []).append(plan)
    for group in by_status.values():
        for k, plan in enumerate(group):  # names sort as created
            detailed = k < shown
            plan.hourly = detailed
            plan.checks_every = timedelta(minutes=1) if detailed else timedelta(minutes=15)
            plan.checks_for = timedelta(hours=24) if detailed else timedelta(hours=1)
    return plans


def _day(now: datetime, days_ago: int) -> datetime:
    d = (now - timedelta(days=days_ago)).date()
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


async def seed(repo: Repository, plans: list[Plan], now: datetime | None = None) -> Seeded:
    now = now or datetime.now(UTC)
    pool = repo.pool
    specs = []
    for p in plans:
        spec = ENDPOINT_ADAPTER.validate_python(
            {"name": p.name, "url": p.url, "protocol": p.protocol, "check_interval": 86400,
             "timeout": 10, "severity": p.severity, "tags": list(p.tags)}
        )  # fmt: skip
        specs.append(
            (spec.name, spec.protocol.value, spec.url, json.dumps(spec.model_dump(mode="json")),
             spec.severity.value, list(spec.tags))
        )  # fmt: skip
    await pool.executemany(
        "INSERT INTO endpoints (name, protocol, url, spec, severity, tags, source) "
        "VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, 'api')",
        specs,
    )
    ids = {r["name"]: r["id"] for r in await pool.fetch("SELECT id, name FROM endpoints")}
    await _rollups(repo, plans, ids, now)
    await _checks(repo, plans, ids, now)
    await _outages(repo, plans, ids, now)
    windows = await _windows(repo, now)
    return Seeded(now, ids, {p.name: p for p in plans}, windows)


async def _rollups(repo: Repository, plans: list[Plan], ids: dict[str, int], now: datetime) -> None:
    """Every hour UP (one check a minute) from the first day of history to the last full
    hour; then the plan's bad hours, and DOWN hours for the current outage."""
    pool = repo.pool
    last = now.replace(minute=0, second=0, microsecond=0)
    for hourly in (True, False):
        for days in sorted({p.history_days for p in plans}):
            chosen = [ids[p.name] for p in plans if p.hourly is hourly and p.history_days == days]
            if not chosen:
                continue
            step, us, checks = ("1 hour", HOUR_US, 60) if hourly else ("1 day", 24 * HOUR_US, 1440)
            await pool.execute(
                "INSERT INTO uptime_hourly (endpoint_id, hour, up_us, checks) "
                "SELECT e.id, h, $4, $5 FROM unnest($1::bigint[]) AS e(id) CROSS JOIN "
                f"generate_series($2::timestamptz, $3::timestamptz, interval '{step}') AS h "
                "WHERE h < $3",
                chosen,
                _day(now, days - 1),
                last if hourly else _day(now, 0),
                us,
                checks,
            )
    updates: list[tuple[Any, ...]] = []
    for p in plans:
        for days_ago, hour, kind in p.bad_hours:
            at = _day(now, days_ago) + timedelta(hours=hour)
            down = {"down": HOUR_US, "blip": 300_000_000, "half": 1_800_000_000}.get(kind, 0)
            maint = HOUR_US if kind == "maintenance" else 0
            updates.append((ids[p.name], at, HOUR_US - down - maint, down, maint))
        if p.outage is not None and p.hourly:
            hour = (now - p.failing_for).replace(minute=0, second=0, microsecond=0)
            while hour < last:
                updates.append((ids[p.name], hour, 0, HOUR_US, 0))
                hour += HOUR
    await pool.executemany(
        "UPDATE uptime_hourly SET up_us = $3, down_us = $4, maintenance_us = $5 "
        "WHERE endpoint_id = $1 AND hour = $2",
        updates,
    )


def _row(endpoint_id: int, p: Plan, at: datetime, current: bool, i: int) -> StatusRow:
    wave = 1 + 0.35 * math.sin(i / 6 + endpoint_id)  # a gentle daily shape, per endpoint
    rt: float | None = round(p.rt_ms * wave, 1)
    status, reason, error, details = Status.UP, Reason.OK, None, {}
    if current and p.status is Status.DOWN:
        status, reason = Status.DOWN, Reason.REFUSED if p.protocol == "tcp" else Reason.TIMEOUT
        rt, error = None, "connection refused" if p.protocol == "tcp" else "no answer in 10 s"
    elif current and p.status is Status.DEGRADED:
        status, reason = Status.DEGRADED, Reason.SLOW
    elif current and p.status is Status.UNKNOWN:
        status, reason, rt, error = Status.UNKNOWN, Reason.OVERLOADED, None, "event loop stalled"
    elif current and p.status is Status.MAINTENANCE:
        status, details = Status.MAINTENANCE, {"raw_status": "UP"}
    elif p.status is Status.DEGRADED:
        rt = round(rt * 0.2, 1) if rt is not None else None
    return StatusRow(endpoint_id, at, status, reason, rt, error, 1, details)


async def _checks(repo: Repository, plans: list[Plan], ids: dict[str, int], now: datetime) -> None:
    rows: list[StatusRow] = []
    changes = []
    for p in plans:
        endpoint_id = ids[p.name]
        since = now - p.failing_for if p.status is not Status.UP else now - p.checks_for
        steps = int(p.checks_for / p.checks_every)
        for i in range(steps, 0, -1):
            at = now - i * p.checks_every + timedelta(seconds=endpoint_id % 60)
            if at > now:
                continue
            rows.append(_row(endpoint_id, p, at, at >= since, i))
        changes.append((endpoint_id, p.status.value, since))
    for start in range(0, len(rows), 50_000):
        await repo.write_statuses(rows[start : start + 50_000])
    await repo.pool.executemany(
        "INSERT INTO endpoint_state (endpoint_id, status, since) VALUES ($1, $2, $3)", changes
    )


async def _outages(repo: Repository, plans: list[Plan], ids: dict[str, int], now: datetime) -> None:
    for p in plans:
        endpoint_id = ids[p.name]
        for days_ago, hour, minutes, severity in p.closed_outages:
            start = _day(now, days_ago) + timedelta(hours=hour)
            o = await repo.open_outage(endpoint_id, Severity(severity), start, start, "timeout")
            await repo.close_outage(o.id, start + timedelta(minutes=minutes))
        if p.outage is not None:
            severity, acked_by = p.outage
            start = now - p.failing_for
            o = await repo.open_outage(
                endpoint_id, Severity(severity), start, start + timedelta(minutes=2), "timeout"
            )
            if acked_by:
                await repo.acknowledge_outage(o.id, acked_by, start + timedelta(minutes=5))


async def _windows(repo: Repository, now: datetime) -> dict[str, int]:
    running = WindowInput(
        name="db patching", tags=["db"], description="PostgreSQL minor upgrade, one node at a time",
        start_time=now - HOUR, end_time=now + 2 * HOUR,
    )  # fmt: skip
    upcoming = WindowInput(
        name="network upgrade", all=True, description="Core switch firmware",
        start_time=now + timedelta(days=3), end_time=now + timedelta(days=3, hours=2),
    )  # fmt: skip
    made = [await repo.create_window(w) for w in (running, upcoming)]
    return {w.name: w.id for w in made}


def days_ago(now: datetime, n: int) -> date:
    return (now - timedelta(days=n)).date()
