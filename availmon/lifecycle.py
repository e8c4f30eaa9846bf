"""`availmon run`: the process around the daemon: signals, systemd notifications, reload.

- SIGTERM / SIGINT: stop starting checks, let in-flight ones finish for up to
  `[daemon] shutdown_timeout`, flush every result (to PostgreSQL, or to the spool when it is
  away), stop the embedded server, exit 0. systemd's TimeoutStopSec (30 s) covers that bound.
- SIGHUP (`systemctl reload`): re-read the config file; if it is valid, apply the endpoint
  differences without a restart (added ones start, removed ones stop, changed ones are
  rescheduled, unchanged ones keep their state); if not, keep running as before and log every
  problem with its key path. Other sections take effect at the next restart (logged).
- Type=notify: READY=1 once the API listens and checks are scheduled, WATCHDOG=1 from the event
  loop, STATUS= with a one-line summary every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from availmon.app import Daemon, build_daemon
from availmon.config import Settings, load_settings
from availmon.errors import ConfigError
from availmon.logs import get_logger
from availmon.model import EndpointSource
from availmon.sdnotify import Notifier, watchdog_interval, watchdog_loop

log = get_logger("availmon.lifecycle")
STATUS_EVERY_S = 5.0


def status_line(daemon: Daemon) -> str:
    counts = daemon.collector.status_counts()
    stats = daemon.writer.stats
    parts = [f"{len(daemon.monitor)} endpoints"]
    parts += [f"{n} {status.lower()}" for status, n in counts.items() if n]
    parts.append(f"writer queue {stats.queued}")
    if stats.spool_backlog:
        parts.append(f"spool {stats.spool_backlog}")
    return ", ".join(parts)


async def reload_config(daemon: Daemon, path: Path) -> bool:
    """Apply the file's endpoints to the running daemon; False (nothing changed) if invalid."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload_rejected", key=problem.field, problem=problem.message, file=str(path))
        return False
    endpoints = await daemon.repo.sync_config_endpoints(settings.endpoint_specs)
    watched = {w.endpoint.id: w.endpoint for w in daemon.monitor.all()}
    added = changed = removed = unchanged = 0
    for endpoint in endpoints:
        if endpoint.source is not EndpointSource.CONFIG:
            continue
        before = watched.get(endpoint.id)
        if not endpoint.spec.is_active:
            if before is not None:
                await daemon.availability.retire_endpoint(endpoint.id)
                removed += 1
        elif before is None:
            daemon.fleet.apply(endpoint)
            added += 1
        elif before.spec != endpoint.spec:
            daemon.fleet.apply(endpoint)
            changed += 1
        else:
            unchanged += 1
    others = [
        name
        for name in ("daemon", "database", "api", "scheduler", "logging")
        if getattr(settings, name) != getattr(daemon.settings, name)
    ]
    if others:
        log.warning("reload_needs_restart", sections=others)
    log.info("config_reloaded", added=added, changed=changed, removed=removed, unchanged=unchanged)
    return True


async def run_daemon(settings: Settings, config_path: Path | None = None) -> int:
    """Run until SIGTERM or SIGINT; exit code 0 on a clean stop."""
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    notifier = Notifier()
    background: list[asyncio.Task[None]] = []
    try:
        async with build_daemon(settings) as daemon:
            notifier.ready(status_line(daemon))
            interval = watchdog_interval()
            if interval is not None and notifier.enabled:
                background.append(asyncio.create_task(watchdog_loop(notifier, interval)))
            background.append(asyncio.create_task(_report_status(notifier, daemon)))
            while not stop.is_set():
                waiters = [asyncio.ensure_future(e.wait()) for e in (stop, reload_requested)]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for waiter in waiters:
                    waiter.cancel()
                if reload_requested.is_set() and not stop.is_set():
                    reload_requested.clear()
                    if config_path is None:
                        log.warning("reload_without_config_file")
                    else:
                        notifier.send("RELOADING=1")
                        await reload_config(daemon, config_path)
                        notifier.ready(status_line(daemon))
            log.info("availmon_stopping")
            notifier.stopping()
            for task in background:
                task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        notifier.close()
    log.info("availmon_stopped")
    return 0


async def _report_status(notifier: Notifier, daemon: Daemon) -> None:
    while True:
        await asyncio.sleep(STATUS_EVERY_S)
        notifier.status(status_line(daemon))
