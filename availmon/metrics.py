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
the same instant) and formats it there too: the per-endpoint families are written directly
(Snapshot.render), since prometheus-client's own formatting took a few hundred milliseconds
of CPU at 10,000 endpoints, long enough on the loop to make check timings untrustworthy
(see looplag.py) and, in a worker thread, holding the GIL against the loop as long.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString as _untyped_go_float

from availmon.durations import CheckDurations
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


@dataclass(slots=True)  # not frozen: a frozen init costs 3x, 10,000 times a scrape
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
        self.check_duration = CheckDurations(  # collected with the snapshot (below)
            "availmon_check_duration_seconds",
            "Duration of a whole check (every attempt), by protocol and recorded status",
            DURATION_BUCKETS,
        )
        # the latest expiry each endpoint's checks showed: kept through a failed check that
        # never reached the handshake
        self.cert_expiry: dict[int, float] = {}
        self._labels = LabelCache()
        self.registry.register(self)

    def on_check(
        self, watched: Watched, result: ProbeResult, transitions: list[Transition]
    ) -> None:
        """The Monitor listener: one histogram observation, the certificate's expiry."""
        endpoint = watched.endpoint
        if watched.last_duration_s is not None:
            self.check_duration.observe(
                endpoint.spec.protocol.value, result.status.value, watched.last_duration_s
            )
        expiry = certificate_expiry(result)
        if expiry is not None:
            self.cert_expiry[endpoint.id] = expiry

    def snapshot(self, endpoints: bool = True) -> Snapshot:
        """Copy the current state: references and counters only, cheap on the event loop."""
        expiry = self.cert_expiry
        watched = self._monitor.all()
        if len(expiry) > len(watched):  # endpoints removed since their last check
            for endpoint_id in set(expiry) - {w.endpoint.id for w in watched}:
                del expiry[endpoint_id]
        watches = [
            Watch(
                w.endpoint,
                w.machine.state.outage_open,
                w.last_result,
                w.last_duration_s,
                expiry.get(w.endpoint.id),
            )
            for w in (watched if endpoints else ())
        ]
        looplag = self._monitor.looplag
        redis, search = self._redis, self._search
        return Snapshot(
            watches=watches,
            histogram=self.check_duration.collect(),
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
        """What generate_latest(self.registry) gives (a test holds it to that), with the
        per-endpoint families, nearly all the lines, written directly from the monitor:
        prometheus-client's per-sample objects and formatting cost 0.3-0.7 s of CPU per
        scrape at 10,000 endpoints, this ~50-80 ms (measured, shared box). On the loop: a
        worker thread would hold the GIL against it for as long."""
        snapshot = self.snapshot(endpoints=False)
        head = generate_latest(_Families(snapshot.histogram))
        text = _endpoint_text(self._monitor.all(), self.cert_expiry, self._labels)
        tail = generate_latest(_Families(list(_internal_families(snapshot))))
        return head + text.encode() + tail


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


_go_float = cast(Callable[[float], str], _untyped_go_float)  # 1.8e+09, as Go prints it


class _Families:
    """A Collector over a fixed list of families, for generate_latest()."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _escape(value: str) -> str:  # the text format's label-value escapes
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class LabelCache:
    """Each endpoint's `{endpoint_id=..,endpoint_name=..,protocol=..}`, kept per Endpoint
    object (a new spec or name is a new Endpoint, hence a new entry)."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Endpoint, str]] = {}

    def __call__(self, endpoint: Endpoint) -> str:
        cached = self._cache.get(endpoint.id)
        if cached is None or cached[0] is not endpoint:
            text = (
                f'{{endpoint_id="{endpoint.id}",endpoint_name="{_escape(endpoint.name)}",'
                f'protocol="{endpoint.spec.protocol.value}"}}'
            )
            cached = self._cache[endpoint.id] = (endpoint, text)
        return cached[1]

    def forget_all_but(self, endpoint_ids: set[int]) -> None:
        for endpoint_id in set(self._cache) - endpoint_ids:
            del self._cache[endpoint_id]


_EXPIRY = "availmon_endpoint_certificate_expiry_timestamp_seconds"


def _number(value: float) -> str:
    """floatToGoString, short-cut for the finite values below 10^6 that repr() writes alike."""
    return repr(value) if 0.0 <= value < 1e6 else _go_float(value)


def _endpoint_text(watched: list[Watched], expiry: dict[int, float], labels: LabelCache) -> str:
    """The five per-endpoint gauge families, line for line as generate_latest writes them."""
    if len(labels._cache) > 2 * len(watched) + 100:  # endpoints removed: forget their labels
        labels.forget_all_but({w.endpoint.id for w in watched})
    up: list[str] = []
    code: list[str] = []
    duration: list[str] = []
    expiries: list[str] = []
    outage: list[str] = []
    for w in watched:
        label = labels(w.endpoint)
        is_open = "1.0" if w.machine.state.outage_open else "0.0"
        outage.append(f"availmon_endpoint_open_outage{label} {is_open}\n")
        if (not_after := expiry.get(w.endpoint.id)) is not None:
            expiries.append(f"{_EXPIRY}{label} {_number(not_after)}\n")
        if w.last_duration_s is not None:
            duration.append(
                f"availmon_endpoint_check_duration_seconds{label} {_number(w.last_duration_s)}\n"
            )
        if (result := w.last_result) is None:
            continue
        if (value := up_value(result)) is not None:
            up.append(f"availmon_endpoint_up{label} {value!r}\n")
        status_code = result.details.get("status_code")
        if isinstance(status_code, int):
            code.append(f"availmon_endpoint_http_status_code{label} {float(status_code)!r}\n")
    parts = []
    families = _endpoint_families([])  # their names and help texts, in their order
    for family, lines in zip(families, (up, code, duration, expiries, outage), strict=True):
        parts.append(f"# HELP {family.name} {family.documentation}\n# TYPE {family.name} gauge\n")
        parts.extend(lines)
    return "".join(parts)


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
