"""Debian's prometheus-blackbox-exporter against the farm, for `bench/run.py --compare blackbox`.

The exporter probes only when asked (`/probe?target=...&module=...`, what Prometheus does on
every scrape), so a driver process asks it: every target once per interval, spread over the
interval like availmon spreads its checks, at the same rate availmon checks them. Only the
exporter's own CPU is counted; the driver runs in its own process.

    .venv/bin/python bench/blackbox.py drive --exporter URL --module M --targets FILE
                                             --interval S --window-start T --window-end T
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

EXPORTER = "prometheus-blackbox-exporter"
PACKAGE = "prometheus-blackbox-exporter"
_GOLDEN = (math.sqrt(5) - 1) / 2
MAX_IN_FLIGHT = 2000

CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: {timeout}s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
  tcp_connect:
    prober: tcp
    timeout: {timeout}s
    tcp:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
"""


def ensure_installed() -> str:
    """The exporter's path; installs the Debian package first when it is missing."""
    found = shutil.which(EXPORTER)
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit(f"{EXPORTER} is missing: run `apt-get install -y {PACKAGE}` as root")
    sys.stderr.write(f"bench: installing {PACKAGE} with apt-get\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", PACKAGE]):
        subprocess.run(command, check=True, env=env, timeout=600, stdout=sys.stderr)
    found = shutil.which(EXPORTER)
    if not found:
        raise SystemExit(f"{PACKAGE} installed, but {EXPORTER} is not on PATH")
    return found


def write_config(path: Path, timeout: float) -> None:
    path.write_text(CONFIG.format(timeout=f"{timeout:g}"))


def command(binary: str, config: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]


def exporter_version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].strip() if first else "unknown"


# -- driver (its own process) ---------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def drive(args: argparse.Namespace, targets: list[str]) -> dict[str, Any]:
    interval = args.interval
    base = time.monotonic()
    wall_offset = time.time() - base
    window = (args.window_start - wall_offset, args.window_end - wall_offset)
    heap = [(base + ((i * _GOLDEN) % 1.0) * interval, i) for i in range(len(targets))]
    heapq.heapify(heap)
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    counts = {"sent": 0, "in_window": 0, "success": 0, "failed": 0, "errors": 0, "late": 0}
    behind_max = 0.0
    latencies: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=args.probe_timeout + 5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def probe(target: str) -> None:
            async with gate:
                started = time.monotonic()
                try:
                    params = {"target": target, "module": args.module}
                    async with session.get(f"{args.exporter}/probe", params=params) as response:
                        text = await response.text()
                except (aiohttp.ClientError, TimeoutError):
                    ok = None
                else:
                    ok = "\nprobe_success 1" in text
            finished = time.monotonic()
            if window[0] <= finished < window[1]:
                counts["in_window"] += 1
                latencies.append((finished - started) * 1000)
                key = "errors" if ok is None else "success" if ok else "failed"
                counts[key] += 1

        while heap and heap[0][0] < window[1] and time.monotonic() < window[1]:
            due, i = heapq.heappop(heap)
            delay = due - time.monotonic()
            behind_max = max(behind_max, -delay)
            if delay < -1.0:
                counts["late"] += 1  # this driver could not keep up: the rate is lower
            await asyncio.sleep(max(0.0, delay))  # also yields to the requests when behind
            task = asyncio.create_task(probe(targets[i]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            counts["sent"] += 1
            heapq.heappush(heap, (due + interval, i))
        if tasks:
            await asyncio.wait(tasks, timeout=args.probe_timeout + 5)
        for task in tasks:
            task.cancel()
    return {
        **counts,
        "latency_ms_p50": percentile(latencies, 0.5),
        "latency_ms_p99": percentile(latencies, 0.99),
        "behind_s_max": round(behind_max, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("drive", help="ask the exporter for probes at a fixed rate")
    run.add_argument("--exporter", required=True, help="http://127.0.0.1:PORT")
    run.add_argument("--module", required=True, choices=["http_2xx", "tcp_connect"])
    run.add_argument("--targets", required=True, help="file: one target per line")
    run.add_argument("--interval", type=float, required=True)
    run.add_argument("--probe-timeout", type=float, default=5.0)
    run.add_argument("--window-start", type=float, required=True, help="epoch seconds")
    run.add_argument("--window-end", type=float, required=True, help="epoch seconds")
    args = parser.parse_args(argv)
    if not args.exporter.startswith("http://127.0.0.1:"):
        raise SystemExit("the exporter must listen on 127.0.0.1")
    targets = Path(args.targets).read_text().split()
    result = asyncio.run(drive(args, targets))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
