"""Status rows -> Elasticsearch documents, with the endpoint facts each one carries."""

from __future__ import annotations

from collections.abc import Sequence

from availmon.model import StatusRow
from availmon.runner import Monitor
from availmon.search.bulk import Doc
from availmon.search.outbox import Outbox
from availmon.search.template import EndpointMeta, doc_id, document, index_name


class DocBuilder:
    """Endpoint facts come from the monitor (watched endpoints, current spec) or, for one no
    longer watched (deleted, deactivated), from PostgreSQL once, then from memory."""

    def __init__(self, prefix: str, outbox: Outbox, monitor: Monitor | None) -> None:
        self._prefix = prefix
        self._outbox = outbox
        self._monitor = monitor
        self._known: dict[int, EndpointMeta] = {}

    def meta(self, endpoint_id: int) -> EndpointMeta | None:
        monitor = self._monitor
        if monitor is not None and endpoint_id in monitor:
            return EndpointMeta.of(monitor.get(endpoint_id).endpoint)
        return self._known.get(endpoint_id)

    async def build(self, rows: Sequence[StatusRow]) -> list[Doc]:
        missing = {r.endpoint_id for r in rows if self.meta(r.endpoint_id) is None}
        if missing:
            self._known.update(await self._outbox.endpoints(sorted(missing)))
        return [
            Doc(
                row,
                index_name(self._prefix, row.checked_at),
                doc_id(row.endpoint_id, row.checked_at),
                document(row, self.meta(row.endpoint_id)),
            )
            for row in rows
        ]
