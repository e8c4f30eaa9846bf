"""CheckDurations writes the samples prometheus-client's Histogram writes for the same data."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from availmon.durations import CheckDurations
from availmon.metrics import DURATION_BUCKETS

NAME = "availmon_check_duration_seconds"
DOC = "Duration of a whole check (every attempt), by protocol and recorded status"
OBSERVED = [
    ("http", "UP", 0.004),
    ("http", "UP", 0.005),  # on a bound: counted in it (le is inclusive)
    ("tcp", "DOWN", 2.0),
    ("http", "UP", 7.5),
    ("http", "DOWN", 75.0),  # past the last bound: +Inf only
    ("tcp", "DOWN", 0.0),
]


class _Collected:
    def __init__(self, durations: CheckDurations) -> None:
        self._durations = durations

    def collect(self) -> list[object]:
        return list(self._durations.collect())


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def _created_series(text: bytes) -> list[str]:
    """The labels of each `_created` sample, in order."""
    lines = text.decode().splitlines()
    return [line.split("{")[1].split("}")[0] for line in lines if "_created{" in line]


def test_the_exposition_is_prometheus_clients_histograms() -> None:
    ours = CheckDurations(NAME, DOC, DURATION_BUCKETS)
    reference = Histogram(
        NAME, DOC, ("protocol", "result"), buckets=DURATION_BUCKETS, registry=None
    )
    for protocol, result, seconds in OBSERVED:
        ours.observe(protocol, result, seconds)
        reference.labels(protocol, result).observe(seconds)
    registry = CollectorRegistry()
    registry.register(_Collected(ours))  # type: ignore[arg-type]
    expected = CollectorRegistry()
    expected.register(reference)
    ours_text, expected_text = generate_latest(registry), generate_latest(expected)
    assert _without_created(ours_text) == _without_created(expected_text)
    assert _created_series(ours_text) == _created_series(expected_text)  # stamps differ
    bucket = f'{NAME}_bucket{{le="0.005",protocol="http",result="UP"}} 2.0'
    assert bucket in _without_created(ours_text)  # 0.004 and 0.005: le is inclusive
