"""How many endpoints the scheduler sustains: N TCP-connect endpoints against a loopback farm.

    .venv/bin/python bench/scheduler_bench.py [--endpoints N] [--interval S] [--duration S]
                                              [--dsn DSN]

The farm (TCP listeners on 127.0.0.1 only) runs in its own process so its CPU is not counted.
The daemon runs in this process through build_daemon (real PostgreSQL: embedded in a temp dir
unless --dsn is given, real writer, API off). Prints one JSON line: checks due and executed,
skipped, schedule lag percentiles, daemon CPU seconds per 1,000 checks, rows written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from availmon.app import build_daemon
from availmon.config import Settings
from availmon.logs import configure_logging

FARM = """
import asyncio, sys
async def main(n):
    async def accept(reader, writer):
        writer.close()
    servers = [await asyncio.start_server(accept, "127.0.0.1", 0, backlog=4096) for _ in range(n)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
"""


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    args: argparse.Namespace, ports: list[int], dsn: str | None, state_dir: Path
) -> dict[str, Any]:
    endpoints = [
        {
            "name": f"tcp-{i}",
            "url": f"tcp://127.0.0.1:{ports[i % len(ports)]}",
            "check_interval": args.interval,
            "timeout": min(2.0, args.interval / 2),
        }
        for i in range(args.endpoints)
    ]
    settings = Settings(
        daemon={"state_dir": state_dir},
        database={"dsn": dsn} if dsn else {},
        api={"enabled": False},
        scheduler={"max_concurrency": args.concurrency},
        endpoints=endpoints,
    )
    async with build_daemon(settings) as daemon:
        await asyncio.sleep(args.warmup)
        executed0 = daemon.scheduler.executed
        skipped0 = daemon.scheduler.skipped
        daemon.scheduler.lags.clear()
        cpu0 = time.process_time()
        written0 = daemon.writer.stats.written
        await asyncio.sleep(args.duration)
        cpu = time.process_time() - cpu0
        executed = daemon.scheduler.executed - executed0
        skipped = daemon.scheduler.skipped - skipped0
        lags = [lag * 1000 for lag in daemon.scheduler.lags]
        await daemon.writer.flush()
        written = daemon.writer.stats.written - written0
    due = args.endpoints * args.duration / args.interval
    return {
        "endpoints": args.endpoints,
        "interval_s": args.interval,
        "duration_s": args.duration,
        "checks_due": round(due),
        "checks_executed": executed,
        "executed_ratio": round(executed / due, 4),
        "skipped": skipped,
        "checks_per_s": round(executed / args.duration, 1),
        "lag_ms_p50": round(statistics.median(lags), 2) if lags else None,
        "lag_ms_p99": round(percentile(lags, 0.99), 2),
        "lag_ms_max": round(max(lags), 2) if lags else None,
        "cpu_s_per_1000_checks": round(cpu / executed * 1000, 3) if executed else None,
        "daemon_cpu_cores": round(cpu / args.duration, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rows_written": written,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=12.0)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    configure_logging("warning")
    structlog.get_logger("bench").info("start")
    state_dir = Path(tempfile.mkdtemp(prefix="availmon-bench-"))
    farm = subprocess.Popen([sys.executable, "-c", FARM, "8"], stdout=subprocess.PIPE, text=True)
    try:
        assert farm.stdout is not None
        ports = [int(p) for p in farm.stdout.readline().split()]
        result = asyncio.run(measure(args, ports, args.dsn, state_dir))
    finally:
        farm.kill()
        farm.wait()
        shutil.rmtree(state_dir, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
