"""Fleet: what is watched is scheduled, and an endpoint whose checks can outlast its interval
is named in the log when it is applied."""

from __future__ import annotations

from structlog.testing import capture_logs

from availmon.clock import SystemClock
from availmon.model import Endpoint, EndpointSource
from availmon.probes import ProbeContext
from availmon.runner import Monitor
from availmon.services.availability import Fleet
from availmon.specs import ENDPOINT_ADAPTER


def _endpoint(endpoint_id: int, name: str, **fields: object) -> Endpoint:
    spec = ENDPOINT_ADAPTER.validate_python(
        {"name": name, "url": "tcp://127.0.0.1:9", "check_interval": 10.0, **fields}
    )
    return Endpoint(endpoint_id, spec, EndpointSource.CONFIG)


def test_applying_an_endpoint_whose_retries_outlast_its_interval_warns_with_its_id_and_name():
    monitor = Monitor(clock=SystemClock(), probe_context=ProbeContext(), max_concurrency=1)
    fleet = Fleet(monitor, None)
    with capture_logs() as logs:
        fleet.apply(_endpoint(1, "fits", timeout=4.0, retries=1))  # 8 s < 10 s
        fleet.apply(_endpoint(2, "overruns", timeout=4.0, retries=2))  # 12 s
        fleet.apply(_endpoint(3, "edge", timeout=5.0, retries=1))  # 10 s: reaches it
    warned = [(e["endpoint_id"], e["endpoint_name"]) for e in logs]
    assert warned == [(2, "overruns"), (3, "edge")]
    assert all(e["event"] == "check_can_outlast_interval" for e in logs)
    assert all(e["log_level"] == "warning" for e in logs)
    assert logs[0]["detail"].startswith("timeout (4 s) x (retries 2 + 1) = 12 s is not less")
    assert len(monitor) == 3  # warned, and watched all the same
