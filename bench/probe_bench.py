"""Client CPU per check of one probe kind, in this process alone (no scheduler, no storage).

    .venv/bin/python bench/probe_bench.py [--protocol http|tcp] [--checks N] [--concurrency C]
                                          [--loop asyncio|uvloop]

Starts the load farm (bench/farm.py) in its own processes, builds real probes for its "ok"
targets and runs N attempts, C at a time; prints one JSON line with the CPU milliseconds this
process spent per check (user + system), so probe-level changes can be compared in isolation
from the daemon's other costs (bench/run.py measures the whole daemon).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from typing import Any

from procs import farm_process

from availmon.model import Status
from availmon.probes import ProbeContext, build_probe
from availmon.specs import ENDPOINT_ADAPTER


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(args: argparse.Namespace, farm: dict[str, Any]) -> dict[str, Any]:
    context = ProbeContext()
    probes = []
    for i in range(args.concurrency):
        if args.protocol == "http":
            port = farm["http_ports"][i % len(farm["http_ports"])]
            raw = {"protocol": "http", "name": f"h{i}", "url": f"http://127.0.0.1:{port}/ok/{i}"}
        else:
            port = farm["tcp_ports"][i % len(farm["tcp_ports"])]
            raw = {"protocol": "tcp", "name": f"t{i}", "url": f"tcp://127.0.0.1:{port}"}
        probes.append(build_probe(ENDPOINT_ADAPTER.validate_python(raw), context))
    per_worker = args.checks // args.concurrency
    failures: dict[str, int] = {}

    async def worker(probe: Any) -> None:
        for _ in range(per_worker):
            result = await probe.attempt(5.0)
            if result.status is not Status.UP:
                failures[str(result.reason)] = failures.get(str(result.reason), 0) + 1

    await asyncio.gather(*(worker(p) for p in probes[:8]))  # warm-up: imports, first sessions
    started_cpu, started = _cpu(), time.perf_counter()
    await asyncio.gather(*(worker(p) for p in probes))
    cpu, wall = _cpu() - started_cpu, time.perf_counter() - started
    await context.close()
    done = per_worker * args.concurrency
    return {
        "protocol": args.protocol,
        "loop": args.loop,
        "checks": done,
        "failures": failures,
        "cpu_ms_per_check": round(cpu * 1000 / done, 4),
        "checks_per_s": round(done / wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--protocol", choices=("http", "tcp"), default="http")
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    with farm_process() as farm:
        if args.loop == "uvloop":
            import uvloop

            result = uvloop.run(_run(args, farm))
        else:
            result = asyncio.run(_run(args, farm))
    result["revision"] = os.environ.get("BENCH_REVISION", "")
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
