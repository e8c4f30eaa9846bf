"""The benchmark's phases: start the farm and PostgreSQL once, then run the daemon (or the
blackbox exporter) against targets for a warm-up and a measured window, and measure."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import measure
from procs import Child, Children, log
from targets import Target, write_config

from availmon.store import EmbeddedPostgres, dsn_with_database

BENCH = Path(__file__).resolve().parent
# the bench sets these itself; the same variables from the environment would override them
OWN_ENV = {
    "DAEMON__STATE_DIR",
    "DATABASE__DSN",
    "API__ENABLED",
    "API__HOST",
    "API__PORT",
    "LOGGING__LEVEL",
    "LOGGING__FORMAT",
}
STARTUP_TIMEOUT_S = 180.0
FLUSH_GRACE_S = 2.5


@dataclass
class Context:
    args: argparse.Namespace
    tmp: Path
    children: Children
    session: aiohttp.ClientSession
    farm: dict[str, Any]
    admin_dsn: str
    pg_pid: int | None
    targets: list[Target] = field(default_factory=list)
    phase: int = 0

    @property
    def farm_url(self) -> str:
        return f"http://127.0.0.1:{self.farm['control_port']}"


def stale_runs(tmp: Path) -> list[tuple[Path, bool]]:
    """Temp dirs of earlier runs whose benchmark is gone, and whether a server may run there."""
    out = []
    for folder in tmp.parent.glob("availmon-bench-*"):
        owner = folder / "owner.pid"
        if folder == tmp or not owner.exists():
            continue
        if Path(f"/proc/{owner.read_text().strip()}").exists():
            continue  # another benchmark is running
        out.append((folder, (folder / "pg" / "pgdata" / "postmaster.pid").exists()))
    return out


async def reap_stale(tmp: Path) -> None:
    """Stop the PostgreSQL of an earlier run that was SIGKILLed (its farm and daemon died with
    it by their parent-death signal; a server started by pg_ctl does not)."""
    for folder, running in stale_runs(tmp):
        if running:
            log(f"stopping the PostgreSQL left by an interrupted run in {folder}")
            stale = EmbeddedPostgres(folder / "pg")
            await stale.start()  # adopts the running server
            await stale.stop()
        await asyncio.to_thread(shutil.rmtree, folder, True)


async def start(
    stack: AsyncExitStack, children: Children, args: argparse.Namespace, tmp: Path
) -> Context:
    (tmp / "owner.pid").write_text(str(os.getpid()))
    await reap_stale(tmp)
    farm_argv = [sys.executable, str(BENCH / "farm.py"), "--http-workers", str(args.http_workers)]
    farm = children.spawn("farm", farm_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert farm.process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(farm.process.stdout.readline), 30)
    if not line:
        raise RuntimeError("the farm exited before it reported its ports")
    description = json.loads(line)
    log(f"farm up: pids {description['pids']}")
    pg_pid = None
    if args.dsn:
        admin_dsn = args.dsn
    else:
        embedded = EmbeddedPostgres(tmp / "pg")
        await embedded.start()
        stack.push_async_callback(embedded.stop)
        conn = await asyncpg.connect(embedded.dsn("postgres"))
        try:  # commit timestamps give every row's write lag
            await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        finally:
            await conn.close()
        await embedded.stop()
        await embedded.start()
        admin_dsn = embedded.dsn("postgres")
        pg_pid = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
        log(f"embedded PostgreSQL up: pid {pg_pid}")
    session = await stack.enter_async_context(
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    )
    return Context(args, tmp, children, session, description, admin_dsn, pg_pid)


async def _admin(ctx: Context, sql: str) -> None:
    conn = await asyncpg.connect(ctx.admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pids(ctx: Context) -> tuple[list[int], list[int]]:
    pg = [ctx.pg_pid, *measure.children_of(ctx.pg_pid)] if ctx.pg_pid else []
    return list(ctx.farm["pids"]), pg


def _daemon_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.removeprefix("AVAILMON_") not in OWN_ENV}
    env.pop("AVAILMON_CONFIG", None)
    passed = sorted(k for k in env if k.startswith("AVAILMON_"))
    if passed:
        log(f"passing to the daemon: {', '.join(passed)}")
    return env


async def _wait_started(child: Child, log_path: Path) -> dict[str, Any]:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    offset = 0
    while time.monotonic() < deadline:
        with log_path.open(errors="replace") as fh:
            fh.seek(offset)
            for line in fh:
                if '"availmon_started"' in line:
                    event: dict[str, Any] = json.loads(line)
                    return event
            offset = fh.tell()
        if child.process.poll() is not None:
            with log_path.open(errors="replace") as fh:
                tail = fh.read()[-3000:]
            raise RuntimeError(f"the daemon exited with {child.process.returncode}:\n{tail}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the daemon did not start within {STARTUP_TIMEOUT_S:g} s")


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


def _executed(facts: dict[str, Any]) -> tuple[int, int]:
    sched = facts.get("scheduler") or facts.get("checks") or {}
    return int(sched.get("executed", 0)), int(sched.get("skipped", 0))


def _gc_delta(facts0: dict[str, Any], facts1: dict[str, Any]) -> dict[str, Any] | None:
    """The collector's work inside the window alone: the totals include start-up's passes."""
    gc0, gc1 = ((f.get("event_loop") or {}).get("gc") for f in (facts0, facts1))
    if not gc0 or not gc1:
        return None
    return {
        "collections": [b - a for a, b in zip(gc0["collections"], gc1["collections"], strict=True)],
        "pause_total_s": round(gc1["pause_total_s"] - gc0["pause_total_s"], 3),
    }


def _lag_poll_every(rate: float) -> float:
    """Poll before the daemon's 10,000-sample lag window has turned over."""
    return max(0.5, min(5.0, 0.8 * 10_000 / max(rate, 1.0)))


async def daemon_phase(
    ctx: Context, targets: list[Target], label: str, *, outages: bool
) -> dict[str, Any]:
    args = ctx.args
    ctx.phase += 1
    name = f"bench_{ctx.phase}_{label.replace('-', '_')}"
    await _admin(ctx, f'CREATE DATABASE "{name}"')
    dsn = dsn_with_database(ctx.admin_dsn, name)
    state_dir = ctx.tmp / f"state-{name}"
    config = ctx.tmp / f"{name}.toml"
    sections = {
        "daemon": {"state_dir": str(state_dir)},
        "database": {"dsn": dsn},
        "api": {"host": "127.0.0.1", "port": 0},
        "scheduler": {"max_concurrency": args.concurrency},
        "logging": {"level": "info", "format": "json"},
    }
    write_config(
        config, targets, sections, {"check_interval": args.interval, "timeout": args.timeout}
    )
    log_path = ctx.tmp / f"{name}.log"
    log(f"{label}: {len(targets)} endpoints, starting the daemon")
    spawned = time.time()
    with log_path.open("w") as log_file:
        argv = [sys.executable, "-m", "availmon", "--config", str(config), "run"]
        stalls = ctx.tmp / f"{name}.stalls.json"
        if ctx.args.stalls:
            argv[1:3] = [str(BENCH / "stalltrace.py"), str(stalls)]
        child = ctx.children.spawn(
            label, argv, stdout=log_file, stop_timeout=40.0, env=_daemon_env()
        )
    try:
        started = await _wait_started(child, log_path)
        startup_s = datetime.fromisoformat(started["timestamp"]).timestamp() - spawned
        api = f"http://{started['api']}"
        log(f"{label}: started in {startup_s:.2f} s; warming up {args.warmup:g} s")
        await asyncio.sleep(args.warmup)
        metrics = await _measure_daemon(ctx, child, api, targets, outages, label)
        metrics["startup_s"] = round(startup_s, 2)
        metrics["stop_s"] = round(await ctx.children.stop(child) or 0.0, 2)
    finally:
        await ctx.children.stop(child)
    if metrics.pop("_down_at", None):
        await measure.post_json(ctx.session, f"{ctx.farm_url}/up")
    window = metrics.pop("_window")
    metrics |= await measure.stored_rows(dsn, *window)
    # completeness from the database, independent of the daemon's own counters
    stored_due = len(targets) * (window[1] - window[0]) / ctx.args.interval
    metrics["stored_ratio"] = round(metrics["rows_in_window"] / stored_due, 4)
    if "_outage_names" in metrics:
        names, down_at, bound = metrics.pop("_outage_names")
        metrics |= await measure.outage_detection(dsn, names, down_at, bound)
    metrics["first_check_s"] = await _first_check_s(dsn, spawned)
    metrics |= measure.log_summary(log_path)
    if ctx.args.stalls:
        metrics["stalls"] = measure.stall_summary(stalls, BENCH / "results")
    await _admin(ctx, f'DROP DATABASE "{name}" WITH (FORCE)')
    return metrics


async def _first_check_s(dsn: str, spawned: float) -> float | None:
    conn = await asyncpg.connect(dsn)
    try:
        first = await conn.fetchval("SELECT extract(epoch FROM min(checked_at)) FROM statuses")
    finally:
        await conn.close()
    return round(float(first) - spawned, 2) if first is not None else None


async def _measure_daemon(
    ctx: Context, child: Child, api: str, targets: list[Target], outages: bool, label: str
) -> dict[str, Any]:
    args = ctx.args
    rate = len(targets) / args.interval
    farm_pids, pg_pids = _pids(ctx)
    farm0 = await measure.get_json(ctx.session, f"{ctx.farm_url}/stats")
    t0 = time.time()
    user0, sys0, _ = measure.sys_share(child.pid, 0.0, 0.0)
    load0 = os.getloadavg()[0]
    cpu0, farm_cpu0, pg_cpu0 = (
        measure.cpu_seconds(child.pid),
        measure.cpu_of(farm_pids),
        measure.cpu_of(pg_pids),
    )
    facts0 = await measure.get_json(ctx.session, f"{api}/readyz")
    counted0 = time.time()  # the counters are as of (about) the answer
    sampler = measure.FactsSampler(ctx.session, f"{api}/readyz", _lag_poll_every(rate))
    reader = measure.ApiReader(ctx.session, f"{api}/api/v1/status", args.api_interval)
    tasks = [asyncio.create_task(sampler.run(_executed(facts0)[0]))]
    if args.api_interval > 0:
        tasks.append(asyncio.create_task(reader.run()))
    profiler = _start_profiler(ctx, child) if args.profile and outages else None
    down_at = None
    down = [t.name for t in targets if t.kind == "down"]
    log(f"{label}: measuring {args.duration:g} s")
    try:
        if outages and down:
            await asyncio.sleep(args.down_after)
            down_at = (await measure.post_json(ctx.session, f"{ctx.farm_url}/down"))["down_at"]
            log(f"{label}: farm took {len(down)} endpoints down")
        await sleep_until(t0 + args.duration)
        t1 = time.time()
        cpu1, farm_cpu1, pg_cpu1 = (
            measure.cpu_seconds(child.pid),
            measure.cpu_of(farm_pids),
            measure.cpu_of(pg_pids),
        )
        _, _, sys_share = measure.sys_share(child.pid, user0, sys0)
        load1 = os.getloadavg()[0]
        facts1 = await measure.get_json(ctx.session, f"{api}/readyz")
        counted1 = time.time()
        farm1 = await measure.get_json(ctx.session, f"{ctx.farm_url}/stats")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    duration, counted = t1 - t0, counted1 - counted0
    (executed0, skipped0), (executed1, skipped1) = _executed(facts0), _executed(facts1)
    executed, skipped = executed1 - executed0, skipped1 - skipped0
    due = len(targets) * counted / args.interval
    cpu = cpu1 - cpu0
    checks_per_s = executed / counted
    requests = farm1["http_requests"] - farm0["http_requests"]
    closing = farm1["http_connection_close"] - farm0["http_connection_close"]
    metrics: dict[str, Any] = {
        "endpoints": len(targets),
        "interval_s": args.interval,
        "duration_s": round(duration, 1),
        "checks_due": round(due),
        "checks_executed": executed,
        "executed_ratio": round(executed / due, 4),
        "skipped": skipped,
        "checks_per_s": round(checks_per_s, 1),
        **sampler.summary(),
        "cpu_s_per_1000_checks": round(cpu / duration / checks_per_s * 1000, 3)
        if executed
        else None,
        "daemon_cpu_cores": round(cpu / duration, 3),
        "daemon_cpu_sys_share": sys_share,  # kernel time: loopback TCP is done in syscalls
        "peak_rss_mb": measure.memory_mb(child.pid, "VmHWM"),
        "gc": (facts1.get("event_loop") or {}).get("gc"),
        "gc_in_window": _gc_delta(facts0, facts1),
        "rss_end_mb": measure.memory_mb(child.pid, "VmRSS"),
        "rows_written": facts1["writer"]["written"] - facts0["writer"]["written"],
        "writer_queued_end": facts1["writer"]["queued"],
        "writer_dropped": facts1["writer"]["dropped"],
        **(reader.summary() if args.api_interval > 0 else {}),
        "farm_cpu_cores": round((farm_cpu1 - farm_cpu0) / duration, 3),
        "farm_http_connection_close_ratio": round(closing / requests, 3) if requests else None,
        "pg_cpu_cores": round((pg_cpu1 - pg_cpu0) / duration, 3) if pg_pids else None,
        "host_load_1m": [round(load0, 2), round(load1, 2)],  # others share this machine
        "_window": (t0, t1),
    }
    if profiler is not None:
        metrics["profile"] = await _finish_profiler(ctx, profiler)
    if down_at is not None:
        recheck = min(args.interval, 10.0)
        bound = 3 * recheck + args.timeout + 1.0  # failure_threshold x recheck + timeout + 1 s
        await sleep_until(down_at + bound + FLUSH_GRACE_S)  # let every outage open first
        metrics["_down_at"] = down_at
        metrics["_outage_names"] = (down, down_at, bound)
    await asyncio.sleep(FLUSH_GRACE_S)
    return metrics


def _start_profiler(ctx: Context, daemon: Child) -> tuple[Child, Path] | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        log("--profile needs py-spy: .venv/bin/pip install py-spy")
        return None
    out = ctx.tmp / "profile.speedscope.json"
    argv = [
        str(spy),
        "record",
        "--pid",
        str(daemon.pid),
        "--duration",
        str(int(ctx.args.duration)),
        "--rate",
        "100",
        "--nonblocking",
        "--format",
        "speedscope",
        "--output",
        str(out),
    ]
    return ctx.children.spawn("py-spy", argv, stdout=subprocess.DEVNULL), out


async def _finish_profiler(ctx: Context, profiler: tuple[Child, Path]) -> dict[str, Any]:
    child, out = profiler
    try:
        await asyncio.wait_for(asyncio.to_thread(child.process.wait), 30)
    except TimeoutError:
        await ctx.children.stop(child)
    if not out.exists():
        return {"error": "py-spy wrote no profile"}
    saved = BENCH / "results" / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.speedscope.json"
    saved.parent.mkdir(exist_ok=True)
    out.replace(saved)
    return {"speedscope": str(saved.relative_to(BENCH.parent)), **measure.profile_summary(saved)}
