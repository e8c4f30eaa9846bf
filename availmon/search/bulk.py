"""One `_bulk` exchange with Elasticsearch, and what each answer means for the rows.

Per item:  2xx           indexed
           429, 5xx      retried here, only those items, with a short backoff
           400           the document itself is refused (mapping conflict, unparsable
                         value): reported as Rejected, recorded, never retried
           anything else not the document's fault (403 read-only index, 404 no auto-create,
                         ...): EsUnavailable, like a refused request or a dead connection
Items still refused after the retries also raise EsUnavailable: the caller keeps those rows
pending and backs off, which is what an overloaded cluster asks for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from availmon.model import StatusRow
from availmon.search.outbox import Rejected

RETRIABLE_ITEM_STATUS = frozenset({429, 500, 502, 503, 504})
DOCUMENT_ERROR_STATUS = 400


class EsUnavailable(Exception):
    """Elasticsearch cannot take these documents now (down, overloaded, or refusing us)."""


@dataclass(frozen=True, slots=True)
class Doc:
    row: StatusRow
    index: str
    id: str
    source: dict[str, Any]


@dataclass(slots=True)
class BulkOutcome:
    indexed: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    retried: int = 0  # item retries (429/5xx per item)
    requests: int = 0


def _operations(docs: Sequence[Doc]) -> list[dict[str, Any]]:
    operations: list[dict[str, Any]] = []
    for doc in docs:
        operations.append({"index": {"_index": doc.index, "_id": doc.id}})
        operations.append(doc.source)
    return operations


def describe(exc: BaseException) -> str:
    """A one-line reason from a client exception, with the server's error type if any."""
    if isinstance(exc, ApiError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        detail = error.get("type") if isinstance(error, dict) else error
        return f"HTTP {exc.meta.status} {detail or exc.message}"
    return f"{type(exc).__name__}: {exc}"


async def send(
    client: AsyncElasticsearch,
    docs: Sequence[Doc],
    *,
    item_retries: int = 3,
    retry_initial: float = 0.2,
) -> BulkOutcome:
    """Index `docs`; return what was indexed and refused, or raise EsUnavailable."""
    outcome = BulkOutcome()
    pending = list(docs)
    for attempt in range(item_retries + 1):
        retry, last_refusal = await _once(client, pending, outcome)
        if not retry:
            return outcome
        if attempt == item_retries:
            raise EsUnavailable(
                f"{len(retry)} documents still refused after {item_retries} retries: {last_refusal}"
            )
        outcome.retried += len(retry)
        pending = retry
        await asyncio.sleep(retry_initial * 2**attempt)
    raise AssertionError("unreachable")


async def _once(
    client: AsyncElasticsearch, docs: list[Doc], outcome: BulkOutcome
) -> tuple[list[Doc], str]:
    outcome.requests += 1
    try:
        response = await client.bulk(operations=_operations(docs))
    except (ApiError, TransportError) as exc:
        raise EsUnavailable(describe(exc)) from exc
    items = response.body.get("items") if isinstance(response.body, dict) else None
    if not isinstance(items, list) or len(items) != len(docs):
        raise EsUnavailable(f"malformed _bulk answer for {len(docs)} documents")
    retry: list[Doc] = []
    last_refusal = ""
    for doc, item in zip(docs, items, strict=True):
        result = next(iter(item.values())) if isinstance(item, dict) and item else {}
        status = int(result.get("status", 0))
        if 200 <= status < 300:
            outcome.indexed += 1
            continue
        error = result.get("error")
        error_type = error.get("type") if isinstance(error, dict) else None
        reason = error.get("reason") if isinstance(error, dict) else error
        last_refusal = f"{status} {error_type}: {reason}"
        if status in RETRIABLE_ITEM_STATUS:
            retry.append(doc)
        elif status == DOCUMENT_ERROR_STATUS:
            message = f"{error_type}: {reason}" if error_type else str(reason)
            outcome.rejected.append(
                Rejected(doc.row, doc.index, doc.id, status, error_type, message)
            )
        else:
            raise EsUnavailable(f"document {doc.id} refused: {last_refusal}")
    return retry, last_refusal
