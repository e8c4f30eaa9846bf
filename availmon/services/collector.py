"""The current state of every watched endpoint: the status summary, snapshots, counts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from availmon.model import Endpoint, ProbeResult, Status
from availmon.runner import Monitor, Watched
from availmon.status_view import (
    EndpointNow,
    NowView,
    StatusView,
    endpoint_now,
    endpoint_status,
)
from availmon.store import Repository


class ServiceAvailabilityCollector:
    def __init__(self, repo: Repository | None, monitor: Monitor) -> None:
        self._repo = repo
        self._monitor = monitor
        # side outputs (Redis, Elasticsearch) add a section each to summary(); never blocking
        self.extra_status: dict[str, Callable[[], dict[str, Any]]] = {}
        self._view = StatusView()
        monitor.add_change_listener(self._view.changed)
        self._now = NowView()
        monitor.add_change_listener(self._now.changed)
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Keep the status summary current in the background (StatusView.keep_current)."""
        monitor = self._monitor
        self._refresher = asyncio.get_running_loop().create_task(
            self._view.keep_current(lambda: (monitor.all(), monitor.generation)),
            name="status-view",
        )

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None

    async def collect_all_services(self) -> list[tuple[Endpoint, ProbeResult]]:
        """Check every active endpoint now, concurrently (under the global limit)."""
        watched = self._monitor.all()
        results = await asyncio.gather(*(self._monitor.check(w.endpoint.id) for w in watched))
        return [(w.endpoint, r) for w, r in zip(watched, results, strict=True)]

    def status_counts(self) -> dict[str, int]:
        """Endpoints per status, never-checked ones UNKNOWN. From the status view's counts,
        which it keeps per fragment anyway: counting 50,000 endpoints afresh held the loop
        ~25 ms each time the systemd status line was written (every 5 s). Counted afresh while
        the view is out of date (start-up, a reload): rebuilding it here would do at once what
        its refresher does in slices."""
        watched, generation = self._monitor.all(), self._monitor.generation
        if self._view.generation == generation:  # brought current: at most 1 s of changes
            counts = self._view.bring_current(watched, generation)
        else:  # the view's rebuild is the refresher's, in slices (at once: 430 ms at 50,000)
            counts = Counter((w.machine.state.status or Status.UNKNOWN).value for w in watched)
        return {status.value: counts.get(status.value, 0) for status in Status}

    def snapshot(self) -> list[EndpointNow]:
        """Every watched endpoint's current state, typed, in no particular order."""
        return self._now.snapshot(self._monitor.all(), self._monitor.generation)

    def current(self, endpoint_id: int) -> EndpointNow | None:
        """One endpoint's current state; None when it is not watched (inactive)."""
        if endpoint_id not in self._monitor:
            return None
        return endpoint_now(self._monitor.get(endpoint_id))

    def summary(self) -> dict[str, Any]:
        """Counts per status, then every watched endpoint's current state."""
        endpoints = [endpoint_status(w) for w in sorted(self._monitor.all(), key=_by_name)]
        summary = {"counts": self.status_counts(), "total": len(endpoints), "endpoints": endpoints}
        return summary | {name: section() for name, section in self.extra_status.items()}

    def summary_json(self) -> bytes:
        """summary() encoded, from per-endpoint fragments that are rebuilt only on change."""
        watched = self._monitor.all()
        counts = self._view.bring_current(watched, self._monitor.generation)
        head = {
            "counts": {status.value: counts.get(status.value, 0) for status in Status},
            "total": len(watched),
        }
        extra = {name: section() for name, section in self.extra_status.items()}
        before = json.dumps(head, separators=(",", ":")).encode()[:-1] + b',"endpoints":'
        after = b"}"
        if extra:
            after = b"," + json.dumps(extra, separators=(",", ":")).encode()[1:-1] + b"}"
        return self._view.joined(before, after)  # one copy of the array (14.5 MB at 50,000)


def _by_name(w: Watched) -> str:
    return w.endpoint.name
