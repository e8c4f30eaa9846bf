"""The floor under a TCP check on this host: CPU per bare connect at a paced rate.

    .venv/bin/python bench/floor.py [--rate 5000] [--seconds 15] [--ports P,P,...]

Starts the load farm (bench/farm.py), or uses the TCP listeners given by --ports (bench/run.py
does so after the daemon has stopped, against its farm), and, with uvloop, opens and closes
one connection to them per 1/rate seconds (one timer and one task each, as the scheduler does)
and nothing else: no probe, no state, no storage. Prints one JSON line with the CPU microseconds
this process spent per connection. This VM's speed moves by 2x between runs; the daemon's
cost per check over this floor, measured next to it, can be compared across runs where the
bare figures cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
import time
from typing import Any

import uvloop
from procs import farm_process


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _paced(ports: list[int], rate: int, seconds: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    done = failed = 0
    running: set[asyncio.Task[None]] = set()

    async def connect(port: int) -> None:
        nonlocal done, failed
        try:
            transport, _ = await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", port, family=socket.AF_INET
            )
        except OSError:
            failed += 1
            return
        transport.close()
        done += 1

    def launch(index: int) -> None:
        task = loop.create_task(connect(ports[index % len(ports)]))
        running.add(task)
        task.add_done_callback(running.discard)

    warmup = 2  # seconds of connections before the measured ones
    start = loop.time() + 0.1
    cpu0 = wall0 = 0.0
    done0 = 0
    for second in range(warmup + seconds):
        if second == warmup:
            await asyncio.sleep(max(0.0, start + second - loop.time()))
            cpu0, done0, wall0 = _cpu(), done + failed, time.perf_counter()
        for i in range(rate):  # one second of timers, half a second ahead of time
            loop.call_at(start + second + i / rate, launch, second * rate + i)
        await asyncio.sleep(max(0.0, start + second + 0.5 - loop.time()))
    await asyncio.sleep(max(0.0, start + warmup + seconds - loop.time()))
    cpu, wall, count = _cpu() - cpu0, time.perf_counter() - wall0, done + failed - done0
    await asyncio.gather(*running, return_exceptions=True)
    return {
        "rate": rate,
        "connections": count,
        "failed": failed,
        "cpu_us_per_connect": round(cpu * 1e6 / max(count, 1), 1),
        "cores": round(cpu / wall, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=5000, help="connections per second")
    parser.add_argument("--seconds", type=int, default=15, help="measured seconds")
    parser.add_argument("--ports", help="TCP listeners on 127.0.0.1 to use instead of a farm")
    args = parser.parse_args(argv)
    if args.ports:
        ports = [int(port) for port in args.ports.split(",")]
        result = uvloop.run(_paced(ports, args.rate, args.seconds))
    else:
        with farm_process() as farm:
            result = uvloop.run(_paced(farm["tcp_ports"], args.rate, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
