"""The metrics collector on a Monitor with no I/O, read back with prometheus-client's parser."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from prometheus_client.exposition import generate_latest

from availmon.clock import SystemClock
from availmon.looplag import LoopLagMonitor
from availmon.metrics import DURATION_BUCKETS, DaemonMetrics
from availmon.model import Endpoint, EndpointSource, ProbeResult, Reason, Status
from availmon.probes import ProbeContext
from availmon.runner import Monitor, Watched
from availmon.scheduler import CheckScheduler
from availmon.specs import ENDPOINT_ADAPTER
from availmon.state import RAW_STATUS_KEY
from availmon.store.writer import WriterStats
from tests.promtext import Samples, parse, series, value

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATS = WriterStats(
    written=7, dropped=1, rejected=0, queued=3, flushes=2, last_flush_seconds=0.25,
    last_error=None, failing=False, spooled=0, spool_backlog=4,
)  # fmt: skip


class Fleet:
    def __init__(self) -> None:
        self.monitor = Monitor(clock=SystemClock(), probe_context=ProbeContext(), max_concurrency=1)
        self.scheduler = CheckScheduler(self.monitor.check)
        self.metrics = DaemonMetrics(self.monitor, self.scheduler, lambda: STATS)

    def watch(self, endpoint_id: int, name: str, url: str) -> Watched:
        spec = ENDPOINT_ADAPTER.validate_python({"name": name, "url": url})
        return self.monitor.watch(Endpoint(endpoint_id, spec, EndpointSource.CONFIG))

    def checked(self, watched: Watched, result: ProbeResult, duration: float) -> None:
        """What the Monitor does with a finished check, for the parts the metrics read."""
        watched.machine.observe(result.status, T0, result.reason.value)
        watched.last_result = result
        watched.last_duration_s = duration
        self.metrics.on_check(watched, result, [])

    def scrape(self) -> Samples:
        return parse(generate_latest(self.metrics.registry).decode())


def labels(endpoint_id: int, name: str, protocol: str) -> dict[str, str]:
    return {"endpoint_id": str(endpoint_id), "endpoint_name": name, "protocol": protocol}


def test_per_endpoint_values_and_what_is_left_out():
    fleet = Fleet()
    web = fleet.watch(1, "web", "https://127.0.0.1:9/health")
    db = fleet.watch(2, "db port", "tcp://127.0.0.1:9")
    fresh = fleet.watch(3, "never checked", "http://127.0.0.1:9/")
    tls = {"not_after": "2027-03-04T05:06:07Z", "subject": "CN=x"}
    fleet.checked(
        web,
        ProbeResult(Status.UP, Reason.OK, 12.0, details={"status_code": 200, "tls": tls}),
        0.0125,
    )
    for _ in range(3):  # failure_threshold 3: the outage opens
        fleet.checked(db, ProbeResult(Status.DOWN, Reason.REFUSED, None, "refused"), 0.001)
    samples = fleet.scrape()

    w, d, f = (
        labels(1, "web", "https"),
        labels(2, "db port", "tcp"),
        labels(3, "never checked", "http"),
    )
    assert value(samples, "availmon_endpoint_up", **w) == 1.0
    assert value(samples, "availmon_endpoint_up", **d) == 0.0
    assert value(samples, "availmon_endpoint_http_status_code", **w) == 200.0
    assert value(samples, "availmon_endpoint_check_duration_seconds", **w) == 0.0125
    assert value(samples, "availmon_endpoint_check_duration_seconds", **d) == 0.001
    expiry = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp()
    assert value(samples, "availmon_endpoint_certificate_expiry_timestamp_seconds", **w) == expiry
    assert value(samples, "availmon_endpoint_open_outage", **w) == 0.0
    assert value(samples, "availmon_endpoint_open_outage", **d) == 1.0
    assert value(samples, "availmon_endpoint_open_outage", **f) == 0.0
    # only what is known: no status code without HTTP, nothing but the outage before a check
    assert series(samples, "availmon_endpoint_up") == [w, d]
    assert series(samples, "availmon_endpoint_http_status_code") == [w]
    assert series(samples, "availmon_endpoint_certificate_expiry_timestamp_seconds") == [w]
    assert series(samples, "availmon_endpoint_open_outage") == [w, d, f]
    assert all("url" not in s and "target" not in s for _, s in samples)
    assert fresh.last_result is None


def test_up_follows_the_raw_verdict_and_unknown_is_left_out():
    fleet = Fleet()
    slow = fleet.watch(1, "slow", "http://127.0.0.1:9/")
    maint = fleet.watch(2, "in maintenance", "tcp://127.0.0.1:9")
    busy = fleet.watch(3, "distrusted", "tcp://127.0.0.1:10")
    fleet.checked(slow, ProbeResult(Status.DEGRADED, Reason.SLOW, 900.0), 0.9)
    maintenance = {RAW_STATUS_KEY: "DOWN", "maintenance_window_id": 1}
    fleet.checked(maint, ProbeResult(Status.MAINTENANCE, Reason.REFUSED, details=maintenance), 0.1)
    fleet.checked(busy, ProbeResult(Status.UNKNOWN, Reason.OVERLOADED), 0.3)
    samples = fleet.scrape()
    assert value(samples, "availmon_endpoint_up", **labels(1, "slow", "http")) == 1.0
    assert value(samples, "availmon_endpoint_up", **labels(2, "in maintenance", "tcp")) == 0.0
    assert value(samples, "availmon_endpoint_up", **labels(3, "distrusted", "tcp")) is None
    # the check ran, so its duration is known
    duration = value(
        samples, "availmon_endpoint_check_duration_seconds", **labels(3, "distrusted", "tcp")
    )
    assert duration == 0.3


def test_certificate_expiry_survives_a_check_without_a_handshake_and_leaves_with_the_endpoint():
    fleet = Fleet()
    web = fleet.watch(1, "web", "https://127.0.0.1:9/")
    tls = {"tls": {"not_after": "2027-01-01T00:00:00Z"}, "status_code": 200}
    fleet.checked(web, ProbeResult(Status.UP, Reason.OK, 1.0, details=tls), 0.01)
    fleet.checked(web, ProbeResult(Status.DOWN, Reason.REFUSED, None, "refused"), 0.01)
    samples = fleet.scrape()
    expiry = value(
        samples,
        "availmon_endpoint_certificate_expiry_timestamp_seconds",
        **labels(1, "web", "https"),
    )
    assert expiry == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    fleet.monitor.unwatch(1)
    samples = fleet.scrape()
    assert series(samples, "availmon_endpoint_certificate_expiry_timestamp_seconds") == []
    assert fleet.metrics.cert_expiry == {}


def test_histogram_counts_each_check_by_protocol_and_result():
    fleet = Fleet()
    web = fleet.watch(1, "web", "http://127.0.0.1:9/")
    db = fleet.watch(2, "db", "tcp://127.0.0.1:9")
    durations = [0.004, 0.02, 0.3, 7.0]
    for duration in durations:
        fleet.checked(web, ProbeResult(Status.UP, Reason.OK, duration * 1000), duration)
    fleet.checked(web, ProbeResult(Status.DOWN, Reason.TIMEOUT), 2.0)
    fleet.checked(db, ProbeResult(Status.DOWN, Reason.REFUSED), 0.001)
    samples = fleet.scrape()
    name = "availmon_check_duration_seconds"
    up = {"protocol": "http", "result": "UP"}
    assert value(samples, f"{name}_count", **up) == 4
    assert math.isclose(value(samples, f"{name}_sum", **up) or 0, sum(durations))
    for bound in DURATION_BUCKETS:
        expected = sum(d <= bound for d in durations)
        assert value(samples, f"{name}_bucket", le=str(bound), **up) == expected, bound
    assert value(samples, f"{name}_bucket", le="+Inf", **up) == 4
    assert value(samples, f"{name}_count", protocol="http", result="DOWN") == 1
    assert value(samples, f"{name}_count", protocol="tcp", result="DOWN") == 1
    # series only for the pairs seen: protocols x results bounds them
    pairs = {(s["protocol"], s["result"]) for s in series(samples, f"{name}_count")}
    assert pairs == {("http", "UP"), ("http", "DOWN"), ("tcp", "DOWN")}


async def test_daemon_internals():
    fleet = Fleet()
    fleet.scheduler.lags.extend(i / 1000 for i in range(1, 101))  # 1..100 ms
    fleet.monitor.looplag = LoopLagMonitor()
    fleet.monitor.looplag.record(0.15)  # one wake-up 150 ms late: overloaded
    samples = parse((await fleet.metrics.render()).decode())
    assert value(samples, "availmon_checks_executed_total") == 0
    assert value(samples, "availmon_checks_skipped_total") == 0
    lag = "availmon_schedule_lag_seconds"
    assert value(samples, lag, quantile="0.5") == 0.051
    assert value(samples, lag, quantile="0.9") == 0.091
    assert value(samples, lag, quantile="0.99") == 0.1
    assert value(samples, lag, quantile="1.0") == 0.1
    assert value(samples, "availmon_event_loop_overloaded") == 1.0
    assert value(samples, "availmon_event_loop_lag_max_seconds") == 0.15
    assert value(samples, "availmon_writer_queue_depth") == 3
    assert value(samples, "availmon_writer_flush_seconds") == 0.25
    assert value(samples, "availmon_writer_rows_written_total") == 7
    assert value(samples, "availmon_writer_rows_dropped_total") == 1
    assert value(samples, "availmon_spool_backlog_rows") == 4
    # side outputs that are not configured have no metrics at all
    assert not [n for n, _ in samples if "redis" in n or "elasticsearch" in n]


def test_no_lag_samples_no_quantiles():
    fleet = Fleet()
    samples = fleet.scrape()
    assert series(samples, "availmon_schedule_lag_seconds") == []
    assert series(samples, "availmon_event_loop_overloaded") == []  # no loop lag monitor


async def test_the_direct_rendering_is_byte_for_byte_what_prometheus_client_writes():
    fleet = Fleet()
    tricky = fleet.watch(1, "web (primary) @dc1: a/b+c-d.e", "https://127.0.0.1:9/")
    down = fleet.watch(2, "db", "tcp://127.0.0.1:9")
    fleet.watch(3, "never checked", "http://127.0.0.1:9/")
    slow = fleet.watch(4, "slow", "http://127.0.0.1:9/slow")
    tls = {"not_after": "2027-03-04T05:06:07Z"}
    result = ProbeResult(Status.UP, Reason.OK, 1.0, details={"status_code": 200, "tls": tls})
    fleet.checked(tricky, result, 0.0125)
    fleet.checked(down, ProbeResult(Status.DOWN, Reason.REFUSED, None, "refused"), 0.0004)
    fleet.checked(slow, ProbeResult(Status.DEGRADED, Reason.SLOW, 1234.5), 1234.5678)
    fleet.monitor.looplag = LoopLagMonitor()
    fleet.scheduler.lags.extend([0.001, 0.25])
    assert await fleet.metrics.render() == generate_latest(fleet.metrics.registry)
    # a renamed endpoint gets its new labels (the label cache follows the Endpoint object)
    fleet.watch(4, "slow renamed", "http://127.0.0.1:9/slow")
    rendered = await fleet.metrics.render()
    assert rendered == generate_latest(fleet.metrics.registry)
    assert b'endpoint_name="slow renamed"' in rendered and b'"slow"' not in rendered


def test_label_values_are_escaped_as_the_text_format_requires():
    from prometheus_client.openmetrics.exposition import ALLOWUTF8, _escape

    from availmon.metrics import _escape as escape

    for text in ['a"b', "back\\slash", "new\nline", 'all "\\\n three']:
        assert escape(text) == _escape(text, ALLOWUTF8, False)
