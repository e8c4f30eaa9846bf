"""Every committed status row into Elasticsearch, however long it is away.

Two lanes, one task:
- live: batches the writer reports committed are kept in memory (up to `memory_rows`),
  matched to their commit in status_commits, and indexed at once, so new rows keep flowing
  while a backlog drains;
- backlog: the oldest pending commits in PostgreSQL (transaction order), indexed at no more
  than `backlog_rate` documents/s, from memory when the rows are still there, else read back
  (the BRIN on commit_xid is summarized first so that read stays proportional to its rows).
A commit leaves status_commits only when all its rows are indexed or recorded in es_failed, so
a crash, a restart or an outage of either side at worst re-sends documents, which carry
deterministic ids and overwrite themselves. The listener never waits and never fails a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from availmon.config import ElasticsearchSettings
from availmon.errors import StorageError
from availmon.logs import get_logger
from availmon.model import StatusRow
from availmon.outputs import Episode
from availmon.runner import Monitor
from availmon.search import bulk
from availmon.search.bulk import EsUnavailable
from availmon.search.client import apply_template, make_client
from availmon.search.docs import DocBuilder
from availmon.search.outbox import Backlog, Commit, Outbox, Rejected
from availmon.search.template import template_name
from availmon.store import Repository, redact_dsn

log = get_logger("availmon.search")
STOP_TIMEOUT_S = 5.0
BACKLOG_LOG_EVERY_S = 30.0
BACKLOG_AFTER_S = 10.0  # rows waiting longer than this are a backlog worth a log line
SUMMARIZE_EVERY_S = 10.0
MAX_REJECTED_LOGGED = 10  # per bulk; the rest are counted in one line


class EsSync:
    def __init__(
        self,
        settings: ElasticsearchSettings,
        repo: Repository,
        monitor: Monitor | None = None,
        *,
        client: AsyncElasticsearch | None = None,
        poll_interval: float = 1.0,
        settle_s: float = 1.0,
        item_retries: int = 3,
        item_retry_initial: float = 0.2,
    ) -> None:
        self._settings = settings
        self._prefix = settings.index_prefix
        self._client = client or make_client(settings)
        self._outbox = Outbox(repo.pool)
        self._poll = poll_interval
        self._settle = settle_s
        self._item_retries = item_retries
        self._item_retry_initial = item_retry_initial
        self._incoming: deque[Sequence[StatusRow]] = deque()
        self._mem: dict[int, Sequence[StatusRow]] = {}  # commit xid -> its rows
        self._held_rows = 0  # rows in _incoming and _mem
        self._live_floor = 0  # commits above it are live; the rest is backlog
        self._tokens = float(settings.batch_size)
        self._wanted = 1  # tokens the next backlog chunk needs
        self._tokens_at = time.monotonic()
        self._backlog = Backlog(0, 0, None)
        self._backlog_more = True
        self._last_backlog_log = 0.0
        self._backlog_logged = False
        self._last_summarize = 0.0
        self._builder = DocBuilder(settings.index_prefix, self._outbox, monitor)
        self._template_ready = False
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._es = Episode(log, "elasticsearch", maximum=settings.retry_max)
        self._db = Episode(log, "es_sync_database", maximum=settings.retry_max)
        self.indexed = self.rejected = self.read_back = self.memory_overflow = 0
        self.item_retries = self.bulk_requests = 0
        self._drained: deque[tuple[float, int]] = deque(maxlen=64)  # (when, docs) backlog lane

    # -- listener (never waits) -----------------------------------------------------------

    def on_commit(self, rows: Sequence[StatusRow]) -> None:
        if not rows:
            return
        limit = self._settings.memory_rows
        while self._held_rows + len(rows) > limit and self._mem:
            # make room for new rows: backlog rows can be read back, live ones would wait
            oldest = next(iter(self._mem))
            if oldest > self._live_floor:
                break
            self._held_rows -= len(self._mem.pop(oldest))
        if self._held_rows + len(rows) > limit:
            self.memory_overflow += len(rows)  # still pending in PostgreSQL: read back later
        else:
            self._incoming.append(rows)
            self._held_rows += len(rows)
        self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._outbox.set_tracking(True)
        try:
            self._backlog = await self._outbox.backlog()
            self.rejected = await self._outbox.failed_count()
        except StorageError as exc:
            log.warning("es_backlog_unknown", error=str(exc))
        log.info(
            "es_sync_started",
            hosts=[redact_dsn(host) for host in self._settings.hosts],
            index_prefix=self._prefix,
            backlog_rows=self._backlog.rows,
            backlog_commits=self._backlog.commits,
        )
        self._task = asyncio.create_task(self._run(), name="availmon-es-sync")

    async def stop(self) -> None:
        """A last round for what is in memory (when Elasticsearch answers), then close. Rows
        not indexed stay pending in PostgreSQL for the next start."""
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=STOP_TIMEOUT_S)
            if not done:
                self._task.cancel()
                await asyncio.wait([self._task])
        with contextlib.suppress(Exception):
            await self._client.close()
        log.info(
            "es_sync_stopped",
            indexed=self.indexed,
            rejected=self.rejected,
            backlog_rows=self._backlog.rows,
        )

    @property
    def backlog_rows(self) -> int:
        """Committed rows not yet indexed, as of the latest backlog count."""
        return self._backlog.rows

    @property
    def errors(self) -> int:
        """Failed attempts, ever: Elasticsearch requests and reads of the outbox."""
        return self._es.errors + self._db.errors

    def status(self) -> dict[str, Any]:
        """The "elasticsearch" section of GET /api/v1/status."""
        backlog = self._backlog
        failing = self._es.failing or self._db.failing
        return {
            "available": self._template_ready and not self._es.failing,
            "failing_since": _iso(self._es.since or self._db.since),
            "last_error": (self._es.last_error or self._db.last_error) if failing else None,
            "backlog_rows": backlog.rows,
            "backlog_commits": backlog.commits,
            "oldest_pending_checked_at": _iso(backlog.oldest_checked_at),
            "in_memory_rows": self._held_rows,
            "indexed": self.indexed,
            "rejected": self.rejected,
            "read_back_rows": self.read_back,
            "backlog_drain_docs_s": self.drain_rate(),
        }

    def drain_rate(self) -> float:
        """Documents/s the backlog lane sent lately (0 when it has had nothing to send)."""
        if len(self._drained) < 2 or time.monotonic() - self._drained[-1][0] > 10 * self._poll:
            return 0.0
        span = self._drained[-1][0] - self._drained[0][0]
        docs = sum(n for _, n in list(self._drained)[1:])
        return round(docs / span, 1) if span > 0 else 0.0

    # -- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()  # set before this round began: it is the last
            if stopping and (self._es.failing or self._db.failing):
                return  # no last attempt against a peer that is away: the rows wait in PG
            delay = await self._round()
            if stopping:
                return
            if delay:  # a peer failed: honour the backoff, only a stop cuts it short
                await self._sleep(delay, self._stop)
            elif not self._stop.is_set():
                await self._sleep(self._next_wait(), self._wake)

    @staticmethod
    async def _sleep(seconds: float, until: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await until.wait()

    def _next_wait(self) -> float:
        if self._backlog_more and self._backlog.rows:
            self._refill()  # the time the last bulk took counts
            needed = self._wanted - self._tokens
            return min(self._poll, max(needed / self._settings.backlog_rate, 0.01))
        return self._poll

    async def _round(self) -> float:
        """One pass; returns the backoff before the next when a peer failed, else 0."""
        self._wake.clear()
        delay = 0.0
        try:
            if not self._template_ready:
                await self._apply_template()
            await self._identify()
            if not self._es.failing:
                await self._index_live()
            attempted = await self._index_backlog()
            if self._es.failing and not attempted:
                await self._probe()
        except EsUnavailable as exc:
            self._live_floor = max(self._mem, default=self._live_floor)  # all of it is backlog
            delay = self._es.failed(str(exc), backlog_rows=self._backlog.rows)
        except StorageError as exc:
            return self._db.failed(exc)
        try:  # also while Elasticsearch is away: that is when the backlog matters
            await self._refresh_backlog()
        except StorageError as exc:
            return self._db.failed(exc)
        self._db.succeeded()
        return delay

    async def _probe(self) -> None:
        """Nothing to send, but Elasticsearch was failing: ask whether it is back."""
        try:
            await self._client.info()
        except (ApiError, TransportError) as exc:
            raise EsUnavailable(bulk.describe(exc)) from exc
        self._es_answered()

    def _es_answered(self) -> None:
        if self._es.succeeded(backlog_rows=self._backlog.rows):
            # what piled up while it was away is backlog (rate-limited, oldest first); live
            # is what is committed from now on
            self._live_floor = max(self._mem, default=self._live_floor)

    async def _apply_template(self) -> None:
        await apply_template(self._client, self._prefix)
        self._template_ready = True
        self._es_answered()
        log.info("es_template_applied", template=template_name(self._prefix))

    async def _identify(self) -> None:
        if not self._incoming:
            return
        batches = list(self._incoming)
        xids = await self._outbox.identify(batches)
        for _ in batches:
            self._incoming.popleft()
        for batch, xid in zip(batches, xids, strict=True):
            if xid is None:  # indexed from PostgreSQL instead
                self._held_rows -= len(batch)
            else:
                self._mem[xid] = batch

    async def _index_live(self) -> None:
        live = sorted(x for x in self._mem if x > self._live_floor)
        chunk: list[int] = []
        rows = 0
        for xid in live:
            chunk.append(xid)
            rows += len(self._mem[xid])
            if rows >= self._settings.batch_size:
                await self._index_commits(chunk, lane="live")
                chunk, rows = [], 0
        if chunk:
            await self._index_commits(chunk, lane="live")

    async def _index_backlog(self) -> bool:
        """Index the oldest pending commits within the rate budget; True if it sent any.

        Token bucket: `backlog_rate` documents/s, holding at most one bulk. A chunk goes out
        only when the bucket holds it (or a full bulk, for a commit larger than one), so the
        average never exceeds the rate by more than one bulk."""
        self._refill()
        if self._tokens < 1:
            return False
        await self._identify()  # what committed during the live lane is live, not backlog
        skip = [x for x in self._mem if x > self._live_floor]
        commits = await self._outbox.pending(64, skip=skip, settled_s=self._settle)
        self._backlog_more = bool(commits)
        if not commits:
            return False
        self._wanted = min(commits[0].rows, self._settings.batch_size)
        if self._tokens < self._wanted:
            return False
        budget = max(int(self._tokens), self._wanted)
        taken: list[Commit] = []
        rows = 0
        for commit in commits:
            if taken and rows + commit.rows > budget:
                break
            taken.append(commit)
            rows += commit.rows
        sent = await self._index_commits([c.xid for c in taken], lane="backlog", commits=taken)
        self._tokens -= sent
        self._drained.append((time.monotonic(), sent))
        return True

    def _refill(self) -> None:
        now = time.monotonic()
        rate = self._settings.backlog_rate
        capacity = float(self._settings.batch_size)
        self._tokens = min(capacity, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now

    async def _index_commits(
        self, xids: list[int], *, lane: str, commits: Sequence[Commit] = ()
    ) -> int:
        rows: list[StatusRow] = []
        to_read = [c for c in commits if c.xid not in self._mem]
        for xid in xids:
            rows.extend(self._mem.get(xid, ()))
        if to_read:
            if time.monotonic() - self._last_summarize >= SUMMARIZE_EVERY_S:
                self._last_summarize = time.monotonic()
                await self._outbox.summarize()
            read = await self._outbox.rows(to_read)
            self.read_back += len(read)
            rows.extend(read)
        docs = await self._builder.build(rows)
        rejected: list[Rejected] = []
        for start in range(0, len(docs), self._settings.batch_size):
            part = docs[start : start + self._settings.batch_size]
            outcome = await bulk.send(
                self._client,
                part,
                item_retries=self._item_retries,
                retry_initial=self._item_retry_initial,
            )
            self.bulk_requests += outcome.requests
            self.item_retries += outcome.retried
            rejected += outcome.rejected
            self._es_answered()
        await self._outbox.finish(xids, rejected)
        for xid in xids:
            batch = self._mem.pop(xid, None)
            if batch is not None:
                self._held_rows -= len(batch)
        self.indexed += len(docs) - len(rejected)
        self.rejected += len(rejected)
        self._log_rejected(rejected)
        log.debug("es_indexed", lane=lane, commits=len(xids), documents=len(docs))
        return len(docs)

    def _log_rejected(self, rejected: list[Rejected]) -> None:
        for item in rejected[:MAX_REJECTED_LOGGED]:
            meta = self._builder.meta(item.row.endpoint_id)
            log.warning(
                "es_document_rejected",
                endpoint_id=item.row.endpoint_id,
                endpoint_name=meta.name if meta else None,
                checked_at=item.row.checked_at.isoformat(),
                doc_id=item.doc_id,
                index=item.index,
                status=item.status,
                error=item.error,
            )
        if len(rejected) > MAX_REJECTED_LOGGED:
            log.warning("es_documents_rejected", count=len(rejected), logged=MAX_REJECTED_LOGGED)

    async def _refresh_backlog(self) -> None:
        self._backlog = await self._outbox.backlog()
        now = time.monotonic()
        behind = self._backlog.waiting_s >= BACKLOG_AFTER_S
        if behind and now - self._last_backlog_log >= BACKLOG_LOG_EVERY_S:
            self._last_backlog_log = now
            self._backlog_logged = True
            log.info(
                "es_backlog",
                backlog_rows=self._backlog.rows,
                backlog_commits=self._backlog.commits,
                oldest_checked_at=_iso(self._backlog.oldest_checked_at),
                waiting_s=round(self._backlog.waiting_s, 1),
                drain_docs_s=self.drain_rate(),
                rate_limit_docs_s=self._settings.backlog_rate,
            )
        elif not behind and self._backlog_logged:
            self._backlog_logged = False
            log.info("es_backlog_drained", backlog_rows=self._backlog.rows)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None
