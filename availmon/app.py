"""Composition root: settings -> objects, started in dependency order on one AsyncExitStack and
stopped in reverse. Nothing else in the package builds long-lived objects."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from availmon.api import ApiDeps, create_app
from availmon.api.app import server_log
from availmon.clock import Clock, SystemClock
from availmon.config import Settings
from availmon.errors import StartupError, StorageError
from availmon.gctuning import SETTLE_MARGIN_S, freeze_startup_objects, settle_after
from availmon.logs import get_logger
from availmon.looplag import LoopLagMonitor
from availmon.maintenance import MaintenanceCalendar
from availmon.metrics import DaemonMetrics
from availmon.model import Endpoint
from availmon.notify.outbox import Outbox
from availmon.notify.webhook import WebhookDeliverer
from availmon.outputs import attach_side_outputs
from availmon.probes import ProbeContext
from availmon.runner import Monitor, thresholds_of
from availmon.scheduler import CheckScheduler
from availmon.services import (
    AvailabilityService,
    Fleet,
    MaintenanceService,
    OutageManagementService,
    ServiceAvailabilityCollector,
)
from availmon.state import OutageStateMachine
from availmon.store import EmbeddedPostgres, Repository, StatusWriter, apply_migrations
from availmon.store.rollups import UptimeRollups
from availmon.store.spool import Spool
from availmon.store.state_changes import StatusChangeBuffer

if TYPE_CHECKING:
    from availmon.cache import RedisCache
    from availmon.search import EsSync

log = get_logger("availmon.app")
# /readyz warns when checks start this late (p99): a tenth of a 10 s interval, ten times the
# p99 the bench holds at 10,000 HTTP endpoints
LAG_WARNING_MS = 1000
LAG_WARNING_WINDOW_S = 60.0  # over the checks started this recently: one hiccup passes


@dataclass
class Daemon:
    settings: Settings
    repo: Repository
    writer: StatusWriter
    monitor: Monitor
    scheduler: CheckScheduler
    fleet: Fleet
    availability: AvailabilityService
    collector: ServiceAvailabilityCollector
    outages: OutageManagementService
    api_port: int | None = None
    maintenance: MaintenanceService | None = None
    rollups: UptimeRollups | None = None
    deliverer: WebhookDeliverer | None = None
    redis_cache: RedisCache | None = None  # the side outputs, set by attach_side_outputs
    es_sync: EsSync | None = None


@asynccontextmanager
async def open_repository(settings: Settings) -> AsyncIterator[Repository]:
    """The configured PostgreSQL, or an embedded one in state_dir when no DSN is set."""
    async with AsyncExitStack() as stack:
        if settings.database.dsn is not None and settings.database.dsn.get_secret_value():
            dsn = settings.database.dsn.get_secret_value()
            log.info("database_external")
        else:
            state_dir = settings.daemon.state_dir
            try:
                state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create state_dir {state_dir}: {exc}") from None
            embedded = EmbeddedPostgres(state_dir)
            dsn = await embedded.start()
            stack.push_async_callback(embedded.stop)
            log.info("database_embedded", pgdata=str(state_dir / "pgdata"))
        try:
            repo = await Repository.connect(dsn, settings.database.pool_size)
        except (TimeoutError, OSError) as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from None
        stack.push_async_callback(repo.close)
        yield repo


async def restore_state(repo: Repository, monitor: Monitor, endpoints: list[Endpoint]) -> None:
    """Rebuild counters and open outages, so a restart continues episodes, never duplicates."""
    active = [e for e in endpoints if e.spec.is_active]
    open_by_endpoint = {o.endpoint_id: o for o in await repo.open_outages()}
    holds = await repo.reopen_holds()
    watched_ids = {e.id for e in active}
    names = {e.id: e.name for e in endpoints}
    for orphan in [o for o in open_by_endpoint.values() if o.endpoint_id not in watched_ids]:
        # its endpoint was removed from the config or deactivated: nobody will see it recover
        await repo.close_outage(orphan.id, datetime.now(UTC), resolution="endpoint_inactive")
        log.info(
            "outage_closed_endpoint_inactive",
            outage_id=orphan.id,
            endpoint_id=orphan.endpoint_id,
            endpoint_name=names.get(orphan.endpoint_id),
        )
        del open_by_endpoint[orphan.endpoint_id]
    if not active:
        return
    depth = max(max(e.spec.failure_threshold, e.spec.recovery_threshold) for e in active) + 1
    recent = await repo.recent_statuses([e.id for e in active], depth, all_details=False)
    since = await repo.status_since()
    for endpoint in active:
        outage = open_by_endpoint.get(endpoint.id)
        rows = recent.get(endpoint.id, [])
        change = since.get(endpoint.id)
        # trust the recorded change only if it is about the status the latest row shows
        status_since = change[1] if change and rows and rows[0].status is change[0] else None
        machine = OutageStateMachine.restore(
            thresholds_of(endpoint), outage, rows, status_since, hold=endpoint.id in holds
        )
        monitor.watch(endpoint, machine=machine, outage_id=outage.id if outage else None)
    log.info("state_restored", endpoints=len(active), open_outages=len(open_by_endpoint))


@asynccontextmanager
async def build_daemon(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    clock = clock or SystemClock()
    async with AsyncExitStack() as stack:
        repo = await stack.enter_async_context(open_repository(settings))
        applied = await apply_migrations(repo.pool)
        if applied:
            log.info("migrations_applied", versions=applied)
        await repo.ensure_partitions(
            (clock.now() - timedelta(days=1)).date(), settings.database.partition_days_ahead
        )
        endpoints = await repo.sync_config_endpoints(settings.endpoint_specs)
        windows = await repo.sync_config_windows(settings.maintenance, endpoints)
        calendar = MaintenanceCalendar(windows)
        db = settings.database
        spool = Spool(settings.daemon.state_dir / "spool")
        await asyncio.to_thread(spool.open)
        writer = StatusWriter(
            repo,
            db.batch_size,
            db.flush_interval,
            db.queue_size,
            spool=spool,
            spool_after=db.spool_after,
        )
        probe_context = ProbeContext()
        stack.push_async_callback(probe_context.close)
        status_changes = StatusChangeBuffer(repo.pool, db.flush_interval)
        await status_changes.start()
        stack.push_async_callback(status_changes.stop)
        monitor = Monitor(
            clock=clock,
            probe_context=probe_context,
            max_concurrency=settings.scheduler.max_concurrency,
            sink=writer,
            store=repo,
            maintenance=lambda endpoint, at: calendar.match(endpoint.id, endpoint.spec.tags, at),
            status_changes=status_changes,
        )
        rollups = await _start_rollups(stack, repo, monitor, writer, endpoints)
        await writer.start()
        stack.push_async_callback(writer.stop)
        looplag = LoopLagMonitor()  # started with the checks: start-up's own work is no overload
        stack.push_async_callback(looplag.stop)
        monitor.looplag = looplag
        deliverer = await _start_notifications(stack, settings, repo, clock, calendar, monitor)
        await restore_state(repo, monitor, endpoints)
        scheduler = CheckScheduler(monitor.check, tick_interval=settings.scheduler.tick_interval)
        monitor.on_check_start = scheduler.check_started
        fleet = Fleet(monitor, scheduler)
        for endpoint in endpoints:
            fleet.apply(endpoint)
        daemon = Daemon(
            settings=settings,
            repo=repo,
            writer=writer,
            monitor=monitor,
            scheduler=scheduler,
            fleet=fleet,
            availability=AvailabilityService(
                repo, fleet, MaintenanceService(repo, calendar), rollups=rollups
            ),
            collector=ServiceAvailabilityCollector(repo, monitor),
            outages=OutageManagementService(repo, monitor),
            rollups=rollups,
            deliverer=deliverer,
        )
        daemon.maintenance = daemon.availability.maintenance
        daemon.collector.start()
        stack.push_async_callback(daemon.collector.stop)
        await attach_side_outputs(stack, daemon)
        if settings.api.enabled:
            daemon.api_port = await _start_api(stack, daemon)
        scheduler.add_job(
            repo.ensure_partitions_for_today,
            "interval",
            hours=1,
            kwargs={"days_ahead": db.partition_days_ahead},
            id="availmon-partitions",
        )
        # The freeze's full pass (~0.1 s at 10,000 endpoints, ~0.5 s at 50,000) runs before the
        # first check: run while checks were in flight, it inflated their timings and showed
        # as an overload at every start.
        looplag.gc.frozen_objects = freeze_startup_objects(stack)
        looplag.start()
        scheduler.start()
        stack.push_async_callback(_drain, scheduler, settings.daemon.shutdown_timeout)
        log.info(
            "availmon_started",
            endpoints=len(monitor),
            event_loop=loop_implementation(),
            api=f"{settings.api.host}:{daemon.api_port}" if daemon.api_port else None,
        )
        longest = max((w.endpoint.spec.check_interval for w in monitor.all()), default=0.0)
        settle_after(stack, longest + SETTLE_MARGIN_S, looplag.gc.set_frozen)
        yield daemon


async def _start_notifications(
    stack: AsyncExitStack,
    settings: Settings,
    repo: Repository,
    clock: Clock,
    calendar: MaintenanceCalendar,
    monitor: Monitor,
) -> WebhookDeliverer | None:
    """Outage changes write their events to the outbox in their own transaction; the
    deliverer sends them (stopped after the checks have drained, so their events go out)."""
    notifications = settings.notifications
    if not notifications.webhook:
        return None

    def in_maintenance(endpoint_id: int) -> bool:  # no reminders during a window
        if endpoint_id not in monitor:
            return False
        tags = monitor.get(endpoint_id).endpoint.spec.tags
        return calendar.match(endpoint_id, tags, clock.now()) is not None

    outbox = Outbox(repo.pool, notifications.webhook, clock)
    repo.events = outbox
    deliverer = WebhookDeliverer(outbox, notifications, clock, in_maintenance)
    await deliverer.start()
    stack.push_async_callback(deliverer.stop)
    return deliverer


async def _start_rollups(
    stack: AsyncExitStack,
    repo: Repository,
    monitor: Monitor,
    writer: StatusWriter,
    endpoints: list[Endpoint],
) -> UptimeRollups:
    """Hourly uptime rollups fed by committed rows; stopped after the writer's last flush."""
    intervals = {e.id: e.spec.check_interval for e in endpoints}

    def cap_of(endpoint_id: int) -> timedelta:  # a check covers at most 2 x its interval
        if endpoint_id in monitor:
            return timedelta(seconds=2 * monitor.get(endpoint_id).endpoint.spec.check_interval)
        return timedelta(seconds=2 * intervals.get(endpoint_id, 60.0))

    rollups = UptimeRollups(repo.pool, cap_of)
    await rollups.start()
    stack.push_async_callback(rollups.stop)
    writer.add_commit_listener(rollups.on_commit)
    return rollups


async def _drain(scheduler: CheckScheduler, timeout: float) -> None:
    cancelled = await scheduler.stop(timeout)
    log.info("checks_stopped", cancelled_in_flight=cancelled)


def loop_implementation() -> str:
    """ "uvloop" or "asyncio": the package of the running loop's class."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def _quantile_ms(ascending_ms: list[float], q: float) -> float | None:
    if not ascending_ms:
        return None
    return round(ascending_ms[min(len(ascending_ms) - 1, int(q * len(ascending_ms)))], 3)


def readiness(daemon: Daemon) -> tuple[bool, dict[str, Any]]:
    stats = daemon.writer.stats
    problems = []
    # schedule lag (actual start minus planned start) over the latest LAG_SAMPLES launches
    lags_ms = sorted(lag * 1000 for lag in daemon.scheduler.lags)

    if stats.failing:
        problems.append(f"results are not reaching PostgreSQL: {stats.last_error}")
    if not daemon.scheduler.running:
        problems.append("checks are not scheduled")
    looplag = daemon.monitor.looplag
    # warnings leave the daemon ready: it still checks and stores, but late
    warnings = []
    if looplag is not None and looplag.overloaded:
        warnings.append(
            f"event loop overloaded: a wake-up came {looplag.max_recent_ms:g} ms late in the"
            " last 10 s; check timings are unreliable (a check stalled for over"
            " min(250 ms, timeout/4) is recorded UNKNOWN overloaded)"
        )
    recent = sorted(lag * 1000 for lag in daemon.scheduler.recent_lags(LAG_WARNING_WINDOW_S))
    p99 = _quantile_ms(recent, 0.99)
    if p99 is not None and p99 > LAG_WARNING_MS:
        warnings.append(
            f"checks start late: schedule lag p99 {p99:g} ms over the {len(recent)} checks"
            f" started in the last {LAG_WARNING_WINDOW_S:g} s (warned above"
            f" {LAG_WARNING_MS} ms); the host or [scheduler] max_concurrency cannot keep up"
        )
    facts: dict[str, Any] = {
        "problems": problems,
        "warnings": warnings,
        "endpoints": len(daemon.monitor),
        "writer": {
            "queued": stats.queued,
            "spool_backlog": stats.spool_backlog,
            "written": stats.written,
            "dropped": stats.dropped,
            "failing": stats.failing,
        },
        "checks": {"executed": daemon.scheduler.executed, "skipped": daemon.scheduler.skipped},
        "scheduler": {
            "executed": daemon.scheduler.executed,
            "skipped": daemon.scheduler.skipped,
            "lag_samples": len(lags_ms),
            "lag_ms_p50": _quantile_ms(lags_ms, 0.5),
            "lag_ms_p99": _quantile_ms(lags_ms, 0.99),
            "lag_ms_max": round(lags_ms[-1], 3) if lags_ms else None,
        },
        "event_loop": {
            "implementation": loop_implementation(),
            "overloaded": bool(looplag and looplag.overloaded),
            "max_lag_ms_10s": looplag.max_recent_ms if looplag else None,
            "gc": looplag.gc.facts() if looplag else None,
        },
    }
    return not problems, facts


async def _start_api(stack: AsyncExitStack, daemon: Daemon) -> int:
    api = daemon.settings.api
    token = api.token.get_secret_value() if api.token else None
    metrics = DaemonMetrics(
        daemon.monitor,
        daemon.scheduler,
        lambda: daemon.writer.stats,
        redis=daemon.redis_cache,
        search=daemon.es_sync,
    )
    daemon.monitor.add_listener(metrics.on_check)
    app = create_app(
        ApiDeps(
            availability=daemon.availability,
            collector=daemon.collector,
            outages=daemon.outages,
            token=token or None,
            max_body_bytes=api.max_body_bytes,
            read_token_required=api.read_token_required,
            readiness=lambda: readiness(daemon),
            metrics=metrics.render,
            public_status_page=api.public_status_page,
        )
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=server_log())
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, api.host, api.port)
    try:
        await site.start()
    except OSError as exc:  # in use, not ours, or a host that does not resolve
        # asyncio wraps the bind error's words in its own; getaddrinfo's errnos are negative
        errno = exc.errno or 0
        detail = os.strerror(errno) if errno > 0 else (exc.strerror or str(exc))
        raise StartupError(f"api: cannot listen on {api.host}:{api.port}: {detail}") from exc
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else api.port


async def run_migrations(settings: Settings) -> list[str]:
    async with open_repository(settings) as repo:
        return await apply_migrations(repo.pool)
