"""A small Elasticsearch at wire level, for the real `elasticsearch` async client.

It speaks what availmon uses: `GET /` (cluster info), `PUT/GET _index_template/{name}`,
`POST _bulk` with per-item results, `_refresh`, `_count` and `GET {index}/_doc/{id}`; every
answer carries `X-Elastic-Product: Elasticsearch`, without which the 8.x/9.x client refuses
to talk. Indices are created on first write from the matching template (highest priority),
and a document whose `flattened` field nests deeper than its `depth_limit` (20 by default) is
refused with a 400 document_parsing_exception, as Elasticsearch does: a real mapping conflict.

Faults: `fail_requests` (whole `_bulk` answers, e.g. 429 or 503), `item_failures` (per
document id, the statuses of its next attempts), `reject_ids` (permanent 400 for those ids),
and `stop()`/`start()` on the same port for an outage. Everything the client sent is kept in
`requests`; `bulks` lists the document ids of each `_bulk`, with the time it arrived.
"""

from __future__ import annotations

import fnmatch
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PRODUCT_HEADERS = {"X-Elastic-Product": "Elasticsearch"}
ERRORS = {
    429: ("es_rejected_execution_exception", "rejected execution of coordinating operation"),
    503: ("unavailable_shards_exception", "primary shard is not active"),
    500: ("internal_server_error", "boom"),
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Index:
    template: str | None
    mappings: dict[str, Any]
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=PRODUCT_HEADERS)


def _error(status: int, kind: str, reason: str) -> web.Response:
    error = {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}
    return _json({"error": error, "status": status}, status)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


class FakeElasticsearch:
    def __init__(self) -> None:
        self.port = _free_port()
        self.templates: dict[str, dict[str, Any]] = {}
        self.indices: dict[str, Index] = {}
        self.requests: list[Recorded] = []
        self.bulks: list[tuple[float, list[str]]] = []
        self.fail_requests: deque[int] = deque()
        self.item_failures: dict[str, deque[int]] = {}
        self.reject_ids: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record], client_max_size=512 * 1024 * 1024)
        app.router.add_get("/", self._info)
        app.router.add_put("/_index_template/{name}", self._put_template)
        app.router.add_get("/_index_template/{name}", self._get_template)
        app.router.add_route("*", "/_bulk", self._bulk)
        app.router.add_route("*", "/{index}/_refresh", self._ok)
        app.router.add_route("*", "/_refresh", self._ok)
        app.router.add_route("*", "/{index}/_count", self._count)
        app.router.add_get("/{index}/_doc/{id}", self._get_doc)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what the tests read ----------------------------------------------------------------

    def docs(self, pattern: str = "*") -> dict[str, dict[str, Any]]:
        """Every stored document by id, across the indices matching `pattern`."""
        found: dict[str, dict[str, Any]] = {}
        for name, index in self.indices.items():
            if fnmatch.fnmatchcase(name, pattern):
                found.update(index.docs)
        return found

    def bulk_bodies(self) -> list[list[dict[str, Any]]]:
        return [
            [json.loads(line) for line in r.body.splitlines() if line.strip()]
            for r in self.requests
            if r.path.endswith("/_bulk")
        ]

    # -- handlers ---------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                time.monotonic(),
            )
        )
        response: web.StreamResponse = await handler(request)
        return response

    async def _info(self, request: web.Request) -> web.Response:
        return _json(
            {
                "name": "fake-node",
                "cluster_name": "availmon-fake",
                "cluster_uuid": "fake-uuid",
                "version": {
                    "number": "9.1.0",
                    "build_flavor": "default",
                    "lucene_version": "10.2.2",
                    "minimum_wire_compatibility_version": "8.19.0",
                    "minimum_index_compatibility_version": "8.0.0",
                },
                "tagline": "You Know, for Search",
            }
        )

    async def _ok(self, request: web.Request) -> web.Response:
        return _json({"_shards": {"total": 1, "successful": 1, "failed": 0}})

    async def _put_template(self, request: web.Request) -> web.Response:
        self.templates[request.match_info["name"]] = json.loads(await request.read())
        return _json({"acknowledged": True})

    async def _get_template(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.templates:
            return _error(404, "resource_not_found_exception", f"index template [{name}] missing")
        return _json({"index_templates": [{"name": name, "index_template": self.templates[name]}]})

    async def _count(self, request: web.Request) -> web.Response:
        pattern = request.match_info["index"]
        return _json({"count": len(self.docs(pattern)), "_shards": {"total": 1, "successful": 1}})

    async def _get_doc(self, request: web.Request) -> web.Response:
        index = self.indices.get(request.match_info["index"])
        doc_id = request.match_info["id"]
        if index is None or doc_id not in index.docs:
            return _json(
                {"_index": request.match_info["index"], "_id": doc_id, "found": False}, 404
            )
        source = index.docs[doc_id]
        return _json({"_index": request.match_info["index"], "_id": doc_id, "found": True,
                      "_version": index.versions[doc_id], "_source": source})  # fmt: skip

    async def _bulk(self, request: web.Request) -> web.Response:
        if self.fail_requests:
            status = self.fail_requests.popleft()
            return _error(status, *ERRORS.get(status, ("error", "injected")))
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        started = time.perf_counter()
        items: list[dict[str, Any]] = []
        ids: list[str] = []
        for action_line, source in zip(lines[0::2], lines[1::2], strict=True):
            ((action, meta),) = action_line.items()
            ids.append(meta["_id"])
            items.append({action: self._index_one(meta["_index"], meta["_id"], source)})
        self.bulks.append((time.monotonic(), ids))
        took = int((time.perf_counter() - started) * 1000)
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return _json({"took": took, "errors": errors, "items": items})

    def _index_one(self, index_name: str, doc_id: str, source: dict[str, Any]) -> dict[str, Any]:
        base = {"_index": index_name, "_id": doc_id}
        planned = self.item_failures.get(doc_id)
        if planned:
            status = planned.popleft()
            kind, reason = ERRORS.get(status, ("error", "injected"))
            return {**base, "status": status, "error": {"type": kind, "reason": reason}}
        index = self._index(index_name)
        problem = self._mapping_problem(index, source)
        if doc_id in self.reject_ids or problem:
            reason = (
                problem or f"[1:2] failed to parse field [status] of type [keyword] in {doc_id}"
            )
            error = {"type": "document_parsing_exception", "reason": reason}
            return {**base, "status": 400, "error": error}
        created = doc_id not in index.docs
        index.docs[doc_id] = source
        index.versions[doc_id] = index.versions.get(doc_id, 0) + 1
        return {
            **base,
            "_version": index.versions[doc_id],
            "result": "created" if created else "updated",
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "status": 201 if created else 200,
        }

    def _index(self, name: str) -> Index:
        if name not in self.indices:
            matching = [
                (t.get("priority", 0), template_name, t)
                for template_name, t in self.templates.items()
                if any(fnmatch.fnmatchcase(name, p) for p in t.get("index_patterns", []))
            ]
            if matching:
                _, template_name, template = max(matching, key=lambda m: m[0])
                mappings = template.get("template", {}).get("mappings", {})
                self.indices[name] = Index(template_name, mappings)
            else:  # Elasticsearch would guess dynamic mappings
                self.indices[name] = Index(None, {})
        return self.indices[name]

    @staticmethod
    def _mapping_problem(index: Index, source: dict[str, Any]) -> str | None:
        for field_name, mapping in index.mappings.get("properties", {}).items():
            if mapping.get("type") != "flattened" or field_name not in source:
                continue
            limit = mapping.get("depth_limit", 20)
            if _depth(source[field_name]) > limit:
                return (
                    f"the provided [flattened] field [{field_name}] exceeds the maximum depth "
                    f"limit of [{limit}]"
                )
        return None
