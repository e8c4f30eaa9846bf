"""`availmon rebuild-redis`: the Redis view written from PostgreSQL alone.

For a Redis that was flushed or replaced, or a key_prefix that changed, without restarting the
daemon (which writes the whole view itself at start and whenever Redis comes back). Safe while
the daemon runs: the view it writes is the same, and the daemon's next commit wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from availmon.cache.layout import EndpointView, KeyLayout
from availmon.cache.redis_cache import connect, write_full_view
from availmon.config import RedisSettings
from availmon.model import StatusRow
from availmon.store import Repository

RUN_DEPTH = 100  # rows read back per endpoint to find when its status began, if not stored


@dataclass(frozen=True, slots=True)
class RebuildResult:
    endpoints: int
    with_status: int
    open_outages: int
    stale_removed: int


async def rebuild_redis_view(settings: RedisSettings, repo: Repository) -> RebuildResult:
    """Replace the view with PostgreSQL's: active endpoints, newest rows, open outages."""
    endpoints = await repo.list_endpoints(include_inactive=False)
    latest = await repo.latest_statuses()
    changes = await repo.status_since()
    outages = {o.endpoint_id: o for o in await repo.open_outages()}
    unknown_since = [
        e.id
        for e in endpoints
        if e.id in latest and _recorded_since(latest[e.id], changes.get(e.id)) is None
    ]
    recent = await repo.recent_statuses(unknown_since, RUN_DEPTH) if unknown_since else {}
    views = []
    for endpoint in endpoints:
        row = latest.get(endpoint.id)
        since = None
        if row is not None:
            since = _recorded_since(row, changes.get(endpoint.id)) or _run_start(
                recent.get(endpoint.id) or [row]
            )
        outage = outages.get(endpoint.id)
        views.append(
            EndpointView(
                endpoint=endpoint,
                row=row,
                since=since,
                outage_id=outage.id if outage else None,
                outage_started_at=outage.started_at if outage else None,
                outage_severity=str(outage.severity) if outage else None,
            )
        )
    redis = connect(settings)
    try:
        layout = KeyLayout(settings.key_prefix, settings.events_channel)
        hashes = {view.endpoint.id: view.fields() for view in views}
        removed = await write_full_view(redis, layout, hashes, "rebuild")
    finally:
        await redis.aclose()
    with_status = sum(v.row is not None for v in views)
    with_outage = sum(v.outage_id is not None for v in views)
    return RebuildResult(len(views), with_status, with_outage, removed)


def _recorded_since(row: StatusRow, change: tuple[object, datetime] | None) -> datetime | None:
    """endpoint_state's change time, if it is about the status the newest row shows."""
    if change is not None and change[0] == row.status:
        return change[1]
    return None


def _run_start(rows_newest_first: list[StatusRow]) -> datetime:
    since = rows_newest_first[0].checked_at
    for row in rows_newest_first:
        if row.status is not rows_newest_first[0].status:
            break
        since = row.checked_at
    return since
