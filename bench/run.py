"""`make bench`: the real daemon against a loopback load farm, measured; one JSON line out.

    .venv/bin/python bench/run.py [--http N] [--tcp N] [--udp N] [--dns N] [--interval S]
                                  [--duration S] [--warmup S] [--dsn DSN]
                                  [--compare blackbox] [--profile] [--stalls]

Default: 10,000 HTTP endpoints at a 10 s interval, measured for 60 s after a 15 s warm-up.
Starts the farm (bench/farm.py, its own processes), PostgreSQL (embedded in a temp dir, with
track_commit_timestamp on so every row's write lag is known; or a fresh database on --dsn),
then `python -m availmon --config F run` (API on a free port), and reads everything from
outside the daemon: /proc for its CPU (utime+stime, this process only) and peak RSS (VmHWM),
/readyz for its schedule lag and counters, a parallel reader of /api/v1/status, and the
stored rows and outages. The farm takes its "down" endpoints down `--down-after` seconds into
the window and records when; detection latency is that time to each outage row's opened_at.

`--compare blackbox` then runs Debian's prometheus-blackbox-exporter (installed if missing)
against the same targets at the same rate, for HTTP (http_2xx) and TCP (tcp_connect), each
protocol alone with availmon too, and prints both CPU costs per 1,000 checks side by side.
`--profile` records the daemon with py-spy during the window (top functions in the result).
`--stalls` runs the daemon under bench/stalltrace.py, which records the stacks that held the
event loop for 40 ms or more (the longest, and the functions most seen, in the result).

The line goes to stdout and, with the revision and flags, to bench/results/. Everything it
started is stopped on exit, on errors and on Ctrl-C; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

# bench/ is not a package: run as a script, its own folder is first on sys.path
import compare
import phases
import structlog
from procs import Children, free_port, git_revision, log
from targets import PROTOCOLS, build_targets, counts, mix, percents

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__.splitlines()[0] if __doc__ else None
    parser = argparse.ArgumentParser(description=doc)
    for protocol in PROTOCOLS:
        default = 10_000 if protocol == "http" else 0
        parser.add_argument(f"--{protocol}", type=int, default=default, help="endpoints")
    parser.add_argument("--interval", type=float, default=10.0, help="check_interval, s")
    parser.add_argument("--timeout", type=float, help="per check, s (default min(5, interval/2))")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring")
    parser.add_argument("--slow-pct", type=float, default=2.0, help="HTTP: 100-900 ms answers")
    parser.add_argument("--fail-pct", type=float, default=1.0, help="HTTP: always 500")
    parser.add_argument("--flap-pct", type=float, default=1.0, help="HTTP: 503 half the time")
    parser.add_argument("--down-pct", type=float, default=0.5, help="taken down in the window")
    parser.add_argument("--down-after", type=float, default=5.0, help="s into the window")
    parser.add_argument("--api-interval", type=float, default=1.0, help="0: no API reader")
    parser.add_argument("--concurrency", type=int, default=500, help="[scheduler] max_concurrency")
    parser.add_argument("--http-workers", type=int, default=1, help="farm HTTP processes")
    parser.add_argument("--dsn", help="PostgreSQL server (default: embedded in a temp dir)")
    parser.add_argument("--compare", choices=["blackbox"], help="also run this prober")
    parser.add_argument("--compare-endpoints", type=int, help="per protocol (default: N)")
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon's window")
    parser.add_argument("--stalls", action="store_true", help="record loop stalls (stalltrace.py)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if args.timeout is None:
        args.timeout = min(5.0, args.interval / 2)
    if args.timeout >= args.interval:
        parser.error("--timeout must be less than --interval")
    if sum(getattr(args, p) for p in PROTOCOLS) <= 0:
        parser.error("no endpoints: give --http, --tcp, --udp or --dns a count")
    return args


def slug(args: argparse.Namespace) -> str:
    parts = [f"{p}{n}" for p, n in counts(args).items()]
    parts.append(f"i{args.interval:g}")
    if args.compare:
        parts.append(args.compare)
    return "-".join(parts)


def budget_s(args: argparse.Namespace) -> float:
    """An upper bound for the whole run; past it everything is stopped."""
    phase = 240 + args.warmup + args.duration + 3 * args.interval + args.timeout
    return phase * (5 if args.compare else 1)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="availmon-bench-"))
        stack.callback(shutil.rmtree, tmp, True)
        children = Children()
        stack.push_async_callback(children.stop_all)
        ctx = await phases.start(stack, children, args, tmp)
        ctx.targets = build_targets(counts(args), percents(args), ctx.farm)
        result: dict[str, Any] = {"mix": mix(ctx.targets)}
        result |= await phases.daemon_phase(ctx, ctx.targets, "availmon", outages=True)
        log("availmon: " + json.dumps(public(result)))
        if args.tcp:
            result["tcp_floor"] = await tcp_floor(args, ctx.farm["tcp_ports"], result)
        if args.compare == "blackbox":
            result["compare_blackbox"] = await compare.compare_blackbox(ctx, result)
        return result


async def tcp_floor(
    args: argparse.Namespace, ports: list[int], result: dict[str, Any]
) -> dict[str, Any]:
    """bench/floor.py against the farm once the daemon has stopped: the CPU of a bare paced
    connect at the TCP checks' rate on this host now. The VM's speed moves by 2x between runs;
    the daemon's cost over this floor, measured next to it, compares across runs."""
    rate = max(1, round(args.tcp / args.interval))
    log(f"floor: bare connects at {rate}/s for 10 s")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "floor.py"),
        "--rate",
        str(rate),
        "--seconds",
        "10",
        "--ports",
        ",".join(map(str, ports)),
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return {"error": f"floor.py exited {proc.returncode}"}
    floor: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if not (args.http or args.udp or args.dns) and result.get("cpu_s_per_1000_checks"):
        # a TCP-only run: what the daemon adds to each check, in microseconds of CPU
        per_check_us = result["cpu_s_per_1000_checks"] * 1000
        floor["daemon_over_floor_us"] = round(per_check_us - floor["cpu_us_per_connect"], 1)
        floor["daemon_to_floor"] = round(per_check_us / floor["cpu_us_per_connect"], 2)
    return floor


def public(value: Any) -> Any:
    """The printed line without the bulky "_" keys (log examples), which the file keeps."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not k.startswith("_")}
    return value


def save(args: argparse.Namespace, argv: list[str], result: dict[str, Any]) -> Path:
    revision = git_revision(ROOT)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"{stamp}-{revision}-{slug(args)}.json"
    body = {
        "revision": revision,
        "command": " ".join(["bench/run.py", *argv]),
        "flags": {k: v for k, v in vars(args).items() if k != "dsn"},
        "host": {
            "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "python": sys.version.split()[0],
        },
        "result": result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    tmp.replace(path)
    return path


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with asyncio.timeout(budget_s(args)):
        return await bench(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # stdout carries only the result line; the embedded server's log events go to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    free_port()  # fail early if loopback is unusable
    try:
        result = asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.stderr.write("bench: interrupted; everything it started is stopped\n")
        return 130
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 1
    line = {"revision": git_revision(ROOT), "flags": slug(args), **result}
    if not args.no_save:
        line["saved"] = str(save(args, argv, line).relative_to(ROOT))
    sys.stdout.write(json.dumps(public(line)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
