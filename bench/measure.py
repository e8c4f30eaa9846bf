"""What the benchmark measures, and how: process CPU and memory from /proc, the daemon's own
readiness facts, an API reader, the stored rows and outages, the daemon's log, a py-spy profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), not of its children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sys_share(pid: int, user0: float, sys0: float) -> tuple[float, float, float | None]:
    """(utime, stime) now, and the share of stime in the CPU used since (user0, sys0)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    used = (user - user0) + (system - sys0)
    return user, system, round((system - sys0) / used, 3) if used > 0 else None


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def memory_mb(pid: int, key: str = "VmHWM") -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    out.append(int(entry.name))
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as response:  # /readyz answers 503 with the same facts
        data: dict[str, Any] = await response.json(content_type=None)
        return data


async def post_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.post(url) as response:
        response.raise_for_status()
        data: dict[str, Any] = await response.json()
        return data


@dataclass
class FactsSampler:
    """Polls /readyz: the daemon's schedule lag over its latest 10,000 launches, and loop lag.

    The daemon keeps lag samples, not a histogram, so the window figures are combined: p50 is
    the median of the windows' medians, p99 the worst window's p99, max the worst sample."""

    session: aiohttp.ClientSession
    url: str
    every: float
    polls: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0

    async def run(self, executed_at_start: int) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                facts = await get_json(self.session, self.url)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                self.errors += 1
                continue
            sched = facts.get("scheduler") or {}
            # pure: every sample in the daemon's lag window was launched inside our window
            launched = sched.get("executed", 0) - executed_at_start
            facts["_pure"] = launched >= sched.get("lag_samples", 0)
            self.polls.append(facts)

    def summary(self) -> dict[str, Any]:
        pure = [p for p in self.polls if p["_pure"]]
        sched = [p.get("scheduler") or {} for p in pure or self.polls]
        p50s = [s["lag_ms_p50"] for s in sched if s.get("lag_ms_p50") is not None]
        p99s = [s["lag_ms_p99"] for s in sched if s.get("lag_ms_p99") is not None]
        maxes = [s["lag_ms_max"] for s in sched if s.get("lag_ms_max") is not None]
        loops = [p.get("event_loop") or {} for p in self.polls]
        loop_lags = [e["max_lag_ms_10s"] for e in loops if e.get("max_lag_ms_10s") is not None]
        return {
            "lag_ms_p50": percentile(p50s, 0.5),
            "lag_ms_p99": max(p99s) if p99s else None,
            "lag_ms_max": max(maxes) if maxes else None,
            "lag_polls": len(self.polls),
            # False: too few checks in the window to push warm-up samples out of the daemon's
            # 10,000-sample lag window, so these lag figures include the warm-up
            "lag_window_pure": bool(pure),
            "loop_lag_ms_max": max(loop_lags) if loop_lags else None,
            "loop_overloaded_polls": sum(1 for e in loops if e.get("overloaded")),
            "not_ready_polls": sum(1 for p in self.polls if not p.get("ready")),
        }


@dataclass
class ApiReader:
    """One reader of /api/v1/status, a request every `every` seconds (sequential)."""

    session: aiohttp.ClientSession
    url: str
    every: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    size: int = 0

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            try:
                async with self.session.get(self.url) as response:
                    body = await response.read()
                    if response.status != 200:
                        self.errors += 1
                self.size = len(body)
            except (aiohttp.ClientError, TimeoutError):
                self.errors += 1
            took = time.perf_counter() - started
            self.latencies.append(took * 1000)
            await asyncio.sleep(max(0.0, self.every - took))

    def summary(self) -> dict[str, Any]:
        return {
            "api_status_ms_p50": percentile(self.latencies, 0.5),
            "api_status_ms_p99": percentile(self.latencies, 0.99),
            "api_status_ms_max": round(max(self.latencies), 2) if self.latencies else None,
            "api_status_requests": len(self.latencies),
            "api_status_errors": self.errors,
            "api_status_bytes": self.size,
        }


async def stored_rows(dsn: str, t0: float, t1: float) -> dict[str, Any]:
    """Rows checked inside the window: count, check latency, write lag (commit timestamps)."""
    conn = await asyncpg.connect(dsn)
    try:
        commit_ts = await conn.fetchval("SHOW track_commit_timestamp") == "on"
        window = "s.checked_at >= to_timestamp($1) AND s.checked_at < to_timestamp($2)"
        rows = await conn.fetchrow(
            f"SELECT count(*) AS n, count(*) FILTER (WHERE s.status = 'UP') AS up, "
            f"percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY s.response_time_ms) "
            f"FILTER (WHERE e.name LIKE '%-ok-%') AS ok_ms, "
            f"percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY s.response_time_ms) "
            f"AS all_ms FROM statuses s JOIN endpoints e ON e.id = s.endpoint_id WHERE {window}",
            t0,
            t1,
        )
        lag = None
        if commit_ts:
            # result ready = check start + its response time; lag = commit minus that
            lag = await conn.fetchrow(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag) AS q, "
                "max(lag) AS max, count(lag) AS n FROM (SELECT extract(epoch FROM "
                "pg_xact_commit_timestamp(s.xmin) - s.checked_at) - s.response_time_ms / 1000 "
                f"AS lag FROM statuses s WHERE {window} AND s.response_time_ms IS NOT NULL) x",
                t0,
                t1,
            )
    finally:
        await conn.close()

    def ms(values: list[float] | None, i: int) -> float | None:
        return round(values[i], 2) if values and values[i] is not None else None

    out: dict[str, Any] = {
        "rows_in_window": rows["n"],
        "rows_per_s": round(rows["n"] / (t1 - t0), 1),
        "rows_up": rows["up"],
        "check_latency_ms_p50": ms(rows["ok_ms"], 0),
        "check_latency_ms_p99": ms(rows["ok_ms"], 1),
        "check_latency_all_ms_p99": ms(rows["all_ms"], 1),
    }
    if lag is not None and lag["n"]:
        out |= {
            "write_lag_ms_p50": round(lag["q"][0] * 1000, 1),
            "write_lag_ms_p99": round(lag["q"][1] * 1000, 1),
            "write_lag_ms_max": round(lag["max"] * 1000, 1),
            "write_lag_rows": lag["n"],
        }
    else:
        out["write_lag_ms_p99"] = None  # needs track_commit_timestamp = on
    return out


async def outage_detection(
    dsn: str, names: list[str], down_at: float, bound_s: float
) -> dict[str, Any]:
    """For endpoints the farm took down at `down_at`: time to the outage row's opened_at."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT e.name, extract(epoch FROM o.opened_at) AS opened, "
            "extract(epoch FROM o.started_at) AS started FROM outages o "
            "JOIN endpoints e ON e.id = o.endpoint_id "
            "WHERE e.name = ANY($1) AND o.opened_at >= to_timestamp($2)",
            names,
            down_at,
        )
    finally:
        await conn.close()
    first: dict[str, tuple[float, float]] = {}
    for row in rows:
        opened, started = float(row["opened"]), float(row["started"])
        if row["name"] not in first or opened < first[row["name"]][0]:
            first[row["name"]] = (opened, started)
    detect = [opened - down_at for opened, _ in first.values()]
    failure = [started - down_at for _, started in first.values()]
    return {
        "outage_endpoints": len(names),
        "outage_detected": len(first),
        "outage_detect_s_p50": percentile(detect, 0.5),
        "outage_detect_s_max": round(max(detect), 2) if detect else None,
        "outage_first_failure_s_max": round(max(failure), 2) if failure else None,
        "outage_bound_s": bound_s,
    }


def log_summary(path: Path) -> dict[str, Any]:
    """Warning and error events of the daemon's JSON log, by event name."""
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    unparsed = 0
    with path.open(errors="replace") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except ValueError:
                unparsed += 1
                continue
            if isinstance(event, dict) and event.get("level") in ("warning", "error", "critical"):
                key = f"{event['level']}:{event.get('event')}"
                counts[key] += 1
                examples.setdefault(key, line.strip()[:600])
    top = dict(counts.most_common(12))
    return {
        "log_events": top,
        "log_unparsed_lines": unparsed,
        "_log_examples": {key: examples[key] for key in top},  # in the results file only
    }


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Top functions of a py-spy speedscope file by self and by cumulative share of samples.

    Samples whose leaf is the selector's poll are the loop waiting for I/O (py-spy cannot tell
    a blocking epoll_wait from a busy one without pausing the process): they are counted apart
    and the shares are of the other, working, samples."""
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]
    label = [f"{f['name']} ({_short(f.get('file', ''))})" for f in frames]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    working = waiting = 0
    for profile in data["profiles"]:
        for stack in profile["samples"]:
            if not stack:
                continue
            if label[stack[-1]].startswith("EpollSelector.select "):
                waiting += 1
                continue
            working += 1
            own[label[stack[-1]]] += 1
            for name in {label[i] for i in stack}:
                total[name] += 1

    def ranked(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / working, 1)] for name, n in counter.most_common(top)]

    return {
        "samples": working + waiting,
        "in_epoll_pct": round(100 * waiting / max(1, working + waiting), 1),
        "top_self_pct": ranked(own),
        "top_cumulative_pct": ranked(total),
    }


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def stall_summary(path: Path, results: Path) -> dict[str, Any]:
    """bench/stalltrace.py's report, kept whole under results/, summed up for the result line."""
    if not path.exists():
        return {"error": "stalltrace wrote no report"}
    report = json.loads(path.read_text())
    saved = results / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.stalls.json"
    results.mkdir(exist_ok=True)
    path.replace(saved)
    longest = [
        {"ms": s["ms"], "top": s["stacks"][0]["stack"][:4] if s["stacks"] else []}
        for s in report["longest"][:5]
    ]
    return {
        "file": str(saved.relative_to(results.parent.parent)),
        "count": report["stalls"],
        "stalled_ms": report["stalled_ms"],
        "longest": longest,
    }
