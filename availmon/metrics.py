"""Prometheus metrics for GET /metrics, in a registry of this daemon's own (no global state).

Two parts, both in `DaemonMetrics.registry`:

- `StateCollector` reads the current state at scrape time: per endpoint from the Monitor
  (latest result, open outage), and the daemon's internals (scheduler counters and lag, the
  status writer, the spool, the Redis and Elasticsearch side outputs, the event loop).
- `availmon_check_duration_seconds`, a Histogram fed by a Monitor listener after every check.

Cardinality is bounded by configuration, never by traffic: the per-endpoint metrics carry
`endpoint_id`, `endpoint_name` and `protocol` (one series per watched endpoint each, no URL
or target label); the histogram carries `protocol` (6 values) and `result` (the 5 statuses).
README "Prometheus metrics" lists every metric.

Endpoints that were never checked have only `availmon_endpoint_open_outage`; `up`, the HTTP
status code and the check duration appear with the first check (`up` with the first whose
verdict is known): a NaN instead would poison every `avg_over_time` over the range it is in.

A scrape copies what it needs on the event loop (references and counters: every value from
the same instant) and builds and formats the text in a worker thread: for 10,000 endpoints
that is a few hundred milliseconds of CPU, which on the loop would stall every check long
enough to make its timing verdict untrustworthy (see looplag.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from availmon.model import Endpoint, ProbeResult, Status
from availmon.state import RAW_STATUS_KEY, Transition

if TYPE_CHECKING:
    from availmon.cache import RedisCache
    from availmon.runner import Monitor, Watched
    from availmon.scheduler import CheckScheduler
    from availmon.search import EsSync
    from availmon.store.writer import WriterStats

ENDPOINT_LABELS = ("endpoint_id", "endpoint_name", "protocol")
# seconds; a check is one probe attempt or more (retries), each under its own timeout
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_QUANTILES = (0.5, 0.9, 0.99, 1.0)  # 1.0: the largest lag in the window
_UP = {Status.UP.value: 1.0, Status.DEGRADED.value: 1.0, Status.DOWN.value: 0.0}


def up_value(result: ProbeResult) -> float | None:
    """1 when the check got a right answer (UP, or DEGRADED: slow, certificate expiring), 0
    when DOWN, None when unknown. During maintenance the raw verdict of the check counts."""
    status: object = result.status.value
    if result.status is Status.MAINTENANCE:
        status = result.details.get(RAW_STATUS_KEY)
    return _UP.get(status) if isinstance(status, str) else None


def certificate_expiry(result: ProbeResult) -> float | None:
    """The leaf certificate's notAfter (Unix seconds) from the check's TLS details, if any."""
    tls = result.details.get("tls")
    not_after = tls.get("not_after") if isinstance(tls, dict) else None
    if not isinstance(not_after, str):
        return None
    try:
        return datetime.fromisoformat(not_after).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Watch:
    """One endpoint as a scrape saw it (results are not changed once they are the latest)."""

    endpoint: Endpoint
    outage_open: bool
    result: ProbeResult | None
    duration_s: float | None
    cert_expiry: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape reports, copied on the event loop."""

    watches: list[Watch]
    histogram: list[Metric]
    executed: int
    skipped: int
    lags: list[float]
    lag_window: int
    overloaded: bool | None  # None: no loop lag monitor
    max_loop_lag_s: float
    writer: WriterStats
    redis: tuple[int, int, int] | None  # pending endpoints, queued events, errors
    search: tuple[int, int] | None  # backlog rows, errors

    def collect(self) -> Iterator[Metric]:
        """The Collector protocol, so `generate_latest(snapshot)` formats it."""
        yield from self.histogram
        yield from _endpoint_families(self.watches)
        yield from _internal_families(self)


class DaemonMetrics:
    """The daemon's metrics: `on_check` is a Monitor listener, `render` serves a scrape."""

    def __init__(
        self,
        monitor: Monitor,
        scheduler: CheckScheduler,
        writer_stats: Callable[[], WriterStats],
        *,
        redis: RedisCache | None = None,
        search: EsSync | None = None,
    ) -> None:
        self._monitor = monitor
        self._scheduler = scheduler
        self._writer_stats = writer_stats
        self._redis = redis
        self._search = search
        self.registry = CollectorRegistry()
        self.check_duration = Histogram(
            "availmon_check_duration_seconds",
            "Duration of a whole check (every attempt), by protocol and recorded status",
            ("protocol", "result"),
            buckets=DURATION_BUCKETS,
            registry=None,  # collected with the snapshot (below), not on its own
        )
        # the latest expiry each endpoint's checks showed: kept through a failed check that
        # never reached the handshake
        self.cert_expiry: dict[int, float] = {}
        self.registry.register(self)

    def on_check(
        self, watched: Watched, result: ProbeResult, transitions: list[Transition]
    ) -> None:
        """The Monitor listener: one histogram observation, the certificate's expiry."""
        endpoint = watched.endpoint
        if watched.last_duration_s is not None:
            protocol = endpoint.spec.protocol.value
            self.check_duration.labels(protocol, result.status.value).observe(
                watched.last_duration_s
            )
        expiry = certificate_expiry(result)
        if expiry is not None:
            self.cert_expiry[endpoint.id] = expiry

    def snapshot(self) -> Snapshot:
        """Copy the current state: references and counters only, cheap on the event loop."""
        expiry = self.cert_expiry
        watches = [
            Watch(
                w.endpoint,
                w.machine.state.outage_open,
                w.last_result,
                w.last_duration_s,
                expiry.get(w.endpoint.id),
            )
            for w in self._monitor.all()
        ]
        if len(expiry) > len(watches):  # endpoints removed since their last check
            for endpoint_id in set(expiry) - {w.endpoint.id for w in watches}:
                del expiry[endpoint_id]
        looplag = self._monitor.looplag
        redis, search = self._redis, self._search
        return Snapshot(
            watches=watches,
            histogram=list(self.check_duration.collect()),
            executed=self._scheduler.executed,
            skipped=self._scheduler.skipped,
            lags=list(self._scheduler.lags),
            lag_window=self._scheduler.lags.maxlen or 0,
            overloaded=looplag.overloaded if looplag is not None else None,
            max_loop_lag_s=max(looplag.recent, default=0.0) if looplag is not None else 0.0,
            writer=self._writer_stats(),
            redis=(redis.pending_endpoints, redis.queued_events, redis.errors) if redis else None,
            search=(search.backlog_rows, search.errors) if search else None,
        )

    def collect(self) -> Iterator[Metric]:
        """The Collector protocol (this object is registered in `registry`)."""
        return self.snapshot().collect()

    async def render(self) -> bytes:
        """The text format 0.0.4: the snapshot here, on the loop; the rest in a worker thread."""
        return await asyncio.to_thread(generate_latest, self.snapshot())


def _endpoint_families(watches: list[Watch]) -> Iterator[Metric]:
    def family(name: str, help_text: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, help_text, labels=ENDPOINT_LABELS)

    up = family("availmon_endpoint_up", "1: the latest check was UP or DEGRADED, 0: DOWN")
    code = family("availmon_endpoint_http_status_code", "HTTP status of the latest answer")
    duration = family("availmon_endpoint_check_duration_seconds", "Duration of the latest check")
    expiry = family(
        "availmon_endpoint_certificate_expiry_timestamp_seconds",
        "notAfter of the latest TLS leaf certificate seen, Unix time",
    )
    outage = family("availmon_endpoint_open_outage", "1 while the endpoint has an open outage")
    for watch in watches:
        endpoint = watch.endpoint
        labels = (str(endpoint.id), endpoint.name, endpoint.spec.protocol.value)
        outage.add_metric(labels, 1.0 if watch.outage_open else 0.0)
        if watch.cert_expiry is not None:
            expiry.add_metric(labels, watch.cert_expiry)
        if watch.duration_s is not None:
            duration.add_metric(labels, watch.duration_s)
        if (result := watch.result) is None:
            continue
        if (value := up_value(result)) is not None:
            up.add_metric(labels, value)
        status_code = result.details.get("status_code")
        if isinstance(status_code, int):
            code.add_metric(labels, float(status_code))
    yield from (up, code, duration, expiry, outage)


def _internal_families(snap: Snapshot) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "availmon_checks_executed", "Scheduled checks completed", snap.executed
    )
    yield CounterMetricFamily(
        "availmon_checks_skipped",
        "Scheduled checks skipped: the previous check of the endpoint was still running",
        snap.skipped,
    )
    lag = GaugeMetricFamily(
        "availmon_schedule_lag_seconds",
        f"Start of a scheduled check minus its planned start, over the latest "
        f"{snap.lag_window} launches (quantile 1: the largest)",
        labels=("quantile",),
    )
    lags = sorted(snap.lags)
    for q in LAG_QUANTILES if lags else ():
        lag.add_metric((str(q),), lags[min(len(lags) - 1, int(q * len(lags)))])
    yield lag
    if snap.overloaded is not None:
        yield GaugeMetricFamily(
            "availmon_event_loop_overloaded",
            "1 while the event loop lags too much for check timings to be trusted",
            1.0 if snap.overloaded else 0.0,
        )
        yield GaugeMetricFamily(
            "availmon_event_loop_lag_max_seconds",
            "Largest event loop lag over the last ~10 s",
            snap.max_loop_lag_s,
        )
    yield from _writer_families(snap.writer)
    if snap.redis is not None:
        pending, queued, errors = snap.redis
        backlog = GaugeMetricFamily(
            "availmon_redis_backlog",
            "Waiting for Redis: endpoint hashes to write, events to publish",
            labels=("kind",),
        )
        backlog.add_metric(("endpoints",), pending)
        backlog.add_metric(("events",), queued)
        yield backlog
        yield CounterMetricFamily(
            "availmon_redis_errors", "Failed attempts to write to Redis", errors
        )
    if snap.search is not None:
        rows, errors = snap.search
        yield GaugeMetricFamily(
            "availmon_elasticsearch_backlog",
            "Committed results not yet indexed in Elasticsearch (rows)",
            rows,
        )
        yield CounterMetricFamily(
            "availmon_elasticsearch_errors",
            "Failed attempts of the Elasticsearch sync (its requests, or reading its outbox)",
            errors,
        )


def _writer_families(stats: WriterStats) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "availmon_writer_queue_depth", "Results waiting for the PostgreSQL writer", stats.queued
    )
    flush = GaugeMetricFamily(
        "availmon_writer_flush_seconds", "Duration of the latest batch written to PostgreSQL"
    )
    if stats.last_flush_seconds is not None:
        flush.add_metric((), stats.last_flush_seconds)
    yield flush
    yield CounterMetricFamily(
        "availmon_writer_rows_written", "Results written to PostgreSQL", stats.written
    )
    yield CounterMetricFamily(
        "availmon_writer_rows_dropped",
        "Results lost: the writer queue was full, or PostgreSQL stayed away at shutdown",
        stats.dropped,
    )
    yield GaugeMetricFamily(
        "availmon_spool_backlog_rows",
        "Results in the disk spool, waiting for PostgreSQL",
        stats.spool_backlog,
    )
