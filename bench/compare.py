"""`--compare blackbox`: the blackbox exporter against the same targets at the same rate, and
availmon alone on the same protocol when the main run checked something else."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp
import blackbox
import measure
import phases
from phases import BENCH, Context, sleep_until
from procs import Child, free_port, log
from targets import Target, build_targets, counts, percents


async def compare_blackbox(ctx: Context, main: dict[str, Any]) -> dict[str, Any]:
    args = ctx.args
    binary = await asyncio.to_thread(blackbox.ensure_installed)
    out: dict[str, Any] = {"exporter": await asyncio.to_thread(blackbox.exporter_version, binary)}
    main_counts = counts(args)
    n = args.compare_endpoints or sum(main_counts.values())
    for protocol, module in (("http", "http_2xx"), ("tcp", "tcp_connect")):
        if list(main_counts) == [protocol] and not args.compare_endpoints:
            targets, ours = ctx.targets, main  # the main run checked exactly these
        else:
            targets = build_targets({protocol: n}, percents(args), ctx.farm)
            ours = await phases.daemon_phase(ctx, targets, f"availmon-{protocol}", outages=False)
        try:
            theirs = await blackbox_phase(ctx, binary, targets, module)
        except RuntimeError as exc:  # keep what the other phases measured
            log(f"blackbox {module}: {exc}")
            out[protocol] = {"error": str(exc)}
            continue
        out[protocol] = {
            "endpoints": len(targets),
            "checks_per_s": ours["checks_per_s"],
            "availmon_cpu_s_per_1000_checks": ours["cpu_s_per_1000_checks"],
            "blackbox_cpu_s_per_1000_checks": theirs["cpu_s_per_1000_checks"],
            "availmon_cpu_cores": ours["daemon_cpu_cores"],
            "blackbox_cpu_cores": theirs["exporter_cpu_cores"],
            "availmon_executed_ratio": ours["executed_ratio"],
            "blackbox_completed_ratio": theirs["completed_ratio"],
            "availmon_peak_rss_mb": ours["peak_rss_mb"],
            "blackbox_peak_rss_mb": theirs["exporter_peak_rss_mb"],
            "blackbox": theirs,
        }
        if ours is not main:
            out[protocol]["availmon"] = ours
    return out


async def blackbox_phase(
    ctx: Context, binary: str, targets: list[Target], module: str
) -> dict[str, Any]:
    args = ctx.args
    config = ctx.tmp / "blackbox.yml"
    blackbox.write_config(config, args.timeout)
    port = free_port()
    log_path = ctx.tmp / f"blackbox-{module}.log"
    with log_path.open("w") as log_file:
        exporter = ctx.children.spawn(
            "blackbox", blackbox.command(binary, config, port), stdout=log_file
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_healthy(ctx, exporter, f"{url}/-/healthy")
        target_file = ctx.tmp / f"targets-{module}.txt"
        target_file.write_text("\n".join(t.blackbox_target for t in targets) + "\n")
        start = time.time() + args.warmup
        end = start + args.duration
        log(
            f"blackbox {module}: {len(targets)} targets, warm-up {args.warmup:g} s, "
            f"measuring {args.duration:g} s"
        )
        argv = [
            sys.executable,
            str(BENCH / "blackbox.py"),
            "drive",
            "--exporter",
            url,
            "--module",
            module,
            "--targets",
            str(target_file),
            "--interval",
            str(args.interval),
            "--probe-timeout",
            str(args.timeout),
            "--window-start",
            str(start),
            "--window-end",
            str(end),
        ]
        driver = ctx.children.spawn("driver", argv, stdout=subprocess.PIPE)
        await sleep_until(start)
        cpu0, driver_cpu0 = measure.cpu_seconds(exporter.pid), measure.cpu_seconds(driver.pid)
        await sleep_until(end)
        cpu1, driver_cpu1 = measure.cpu_seconds(exporter.pid), measure.cpu_seconds(driver.pid)
        hwm = measure.memory_mb(exporter.pid, "VmHWM")
        try:
            out, _ = await asyncio.wait_for(
                asyncio.to_thread(driver.process.communicate), args.timeout + 30
            )
            driven = json.loads(out)
        except (TimeoutError, ValueError) as exc:
            await ctx.children.stop(driver)
            raise RuntimeError(f"the blackbox driver gave no result: {exc!r}") from None
    finally:
        await ctx.children.stop(exporter)
    duration = end - start
    due = len(targets) * duration / args.interval
    cpu = cpu1 - cpu0
    done = driven["in_window"]
    driven["driver_cpu_cores"] = round((driver_cpu1 - driver_cpu0) / duration, 3)
    return {
        "module": module,
        "probes_due": round(due),
        "probes_completed": done,
        "completed_ratio": round(done / due, 4),
        "success_ratio": round(driven["success"] / done, 4) if done else None,
        "cpu_s_per_1000_checks": round(cpu / done * 1000, 3) if done else None,
        "exporter_cpu_cores": round(cpu / duration, 3),
        "exporter_peak_rss_mb": hwm,
        "driver": driven,
    }


async def _wait_healthy(ctx: Context, child: Child, url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"the blackbox exporter exited with {child.process.returncode}")
        try:
            async with ctx.session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the blackbox exporter did not answer /-/healthy within 20 s")
