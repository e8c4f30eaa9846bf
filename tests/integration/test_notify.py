"""Webhook notifications through the daemon: the outage lifecycle's events, filters, signing,
reminders, retries with backoff and ordering, at a real loopback receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from availmon.app import build_daemon
from availmon.notify.webhook import backoff

from .test_daemon import db_rows, wait_for
from .test_outages import Switch, call, outages, settings, switch, web_endpoint

__all__ = ["switch"]
SECRET = "s1gn-me"


class Receiver:
    """Collects POSTs per path; `fail[path]` makes that many first requests answer 500."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.fail: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["name"]
        body = await request.read()
        entry = {"at": time.monotonic(), "headers": dict(request.headers), "body": body}
        self.got.setdefault(path, []).append(entry)
        if self.fail.get(path, 0) > 0:
            self.fail[path] -= 1
            return web.Response(status=500)
        return web.Response(status=204)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def events(self, name: str) -> list[dict[str, Any]]:
        """Delivered (2xx-answered would be ideal; all received here) bodies, in order."""
        return [json.loads(e["body"]) for e in self.got.get(name, [])]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def notifications(receiver: Receiver, **hooks: dict[str, Any]) -> dict[str, Any]:
    return {
        "retry_initial": 0.1,
        "retry_max": 0.4,
        "poll_interval": 0.2,
        "reminder_check_interval": 0.2,
        "webhook": [{"name": n, "url": receiver.url(n), **h} for n, h in hooks.items()],
    }


def verify(entry: dict[str, Any], secret: str) -> bool:
    headers = entry["headers"]
    signed = headers["X-Availmon-Timestamp"].encode() + b"." + entry["body"]
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Availmon-Signature"], expected)


async def test_lifecycle_events_filters_and_signatures(
    pg_dsn: str, switch: Switch, receiver: Receiver
):
    hooks = notifications(
        receiver,
        all={"secret": SECRET},
        paging={"severities": ["critical"]},
        other_team={"tags": ["billing"]},
        opened_only={"events": ["outage.opened", "outage.resolved"], "tags": ["web", "x"]},
    )
    config = settings(pg_dsn, [web_endpoint(switch, tags=["web"])], notifications=hooks)
    async with build_daemon(config) as daemon:
        switch.mode = "slow"  # DEGRADED: a low outage

        async def got(name: str, count: int) -> bool:
            return len(receiver.got.get(name, [])) >= count

        await wait_for(lambda: got("all", 1))
        switch.mode = "down"  # raised to critical in place
        await wait_for(lambda: got("all", 2))
        outage_id = (await outages(pg_dsn))[0]["id"]
        status, _ = await call(
            daemon, "PATCH", f"/api/v1/outages/{outage_id}", {"acknowledged_by": "alice"}
        )
        assert status == 200
        await wait_for(lambda: got("all", 3))
        switch.mode = "up"
        await wait_for(lambda: got("all", 4))
        await wait_for(lambda: got("paging", 3))
        await asyncio.sleep(0.5)  # nothing else may arrive
    everything = receiver.events("all")
    assert [e["type"] for e in everything] == [
        "outage.opened",
        "outage.severity_raised",
        "outage.acknowledged",
        "outage.resolved",
    ]
    opened, raised, acked, resolved = everything
    assert len({e["id"] for e in everything}) == 4
    assert opened["outage"]["severity"] == "low" and opened["outage"]["id"] == outage_id
    assert opened["endpoint"] == {
        "id": opened["endpoint"]["id"],
        "name": "web",
        "url": switch.url,
        "protocol": "http",
        "severity": "critical",
        "tags": ["web"],
    }
    assert raised["previous_severity"] == "low" and raised["outage"]["severity"] == "critical"
    assert acked["outage"]["acknowledged_by"] == "alice"
    assert resolved["outage"]["resolution"] == "recovered"
    assert resolved["outage"]["duration_s"] > 0 and resolved["outage"]["ended_at"]
    for entry, event in zip(receiver.got["all"], everything, strict=True):
        assert entry["headers"]["X-Availmon-Event-Id"] == event["id"]
        assert entry["headers"]["X-Availmon-Event"] == event["type"]
        assert entry["headers"]["Content-Type"] == "application/json"
        assert verify(entry, SECRET)
        assert not verify(entry, "wrong")
    # severities = ["critical"]: the low opening is filtered out, the rest passes
    assert [e["type"] for e in receiver.events("paging")] == [
        "outage.severity_raised",
        "outage.acknowledged",
        "outage.resolved",
    ]
    assert "X-Availmon-Signature" not in receiver.got["paging"][0]["headers"]
    assert receiver.events("other_team") == []  # the endpoint has no billing tag
    assert [e["type"] for e in receiver.events("opened_only")] == [
        "outage.opened",
        "outage.resolved",
    ]
    rows = await db_rows(
        pg_dsn,
        "SELECT sink, attempts, delivered_at FROM notification_deliveries ORDER BY event_seq",
    )
    assert len(rows) == 4 + 3 + 2 and all(r["delivered_at"] and r["attempts"] == 1 for r in rows)


async def test_retries_back_off_keep_order_and_deliver_once(
    pg_dsn: str, switch: Switch, receiver: Receiver
):
    receiver.fail["flaky"] = 3  # the first event's first three attempts get HTTP 500
    hooks = notifications(receiver, flaky={})
    switch.mode = "down"
    config = settings(pg_dsn, [web_endpoint(switch)], notifications=hooks)
    async with build_daemon(config) as daemon:
        await wait_for(lambda: _count(receiver, "flaky", 4))
        outage_id = (await outages(pg_dsn))[0]["id"]
        await call(daemon, "PATCH", f"/api/v1/outages/{outage_id}", {"acknowledged_by": "bob"})
        await wait_for(lambda: _count(receiver, "flaky", 5))
        await asyncio.sleep(0.6)
    attempts = receiver.got["flaky"]
    ids = [e["headers"]["X-Availmon-Event-Id"] for e in attempts]
    assert ids[0] == ids[1] == ids[2] == ids[3] != ids[4]  # same event, same id, in order
    assert [e["headers"]["X-Availmon-Delivery-Attempt"] for e in attempts[:4]] == list("1234")
    assert len({e["body"] for e in attempts[:4]}) == 1  # the same bytes every time
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts[:4])]
    expected = [backoff(n, 0.1, 0.4) for n in (1, 2, 3)]  # 0.1, 0.2, 0.4
    assert expected == [0.1, 0.2, 0.4]
    for gap, want in zip(gaps, expected, strict=True):
        assert want * 0.9 <= gap <= want + 0.5, (gaps, expected)
    (row, ack_row) = await db_rows(
        pg_dsn,
        "SELECT attempts, delivered_at, last_error FROM notification_deliveries ORDER BY event_seq",
    )
    assert row["attempts"] == 4 and row["delivered_at"] and row["last_error"] is None
    assert ack_row["attempts"] == 1


async def test_reminders_until_acknowledged_and_none_in_maintenance(
    pg_dsn: str, switch: Switch, receiver: Receiver
):
    hooks = notifications(receiver, oncall={"reminder_interval": 1})
    switch.mode = "down"
    config = settings(pg_dsn, [web_endpoint(switch)], notifications=hooks)
    async with build_daemon(config) as daemon:
        await wait_for(lambda: _count(receiver, "oncall", 3))  # opened + two reminders
        outage_id = (await outages(pg_dsn))[0]["id"]
        now = datetime.now(UTC)
        status, window = await call(
            daemon,
            "POST",
            "/api/v1/maintenance-windows",
            {"name": "quiet", "all": True, "start_time": now.isoformat(),
             "end_time": (now + timedelta(hours=1)).isoformat()},
        )  # fmt: skip
        assert status == 201
        await asyncio.sleep(0.3)  # a reminder check already running may still queue one
        quiet = len(receiver.got["oncall"])
        await asyncio.sleep(1.6)
        assert len(receiver.got["oncall"]) == quiet  # no reminder inside a window
        await call(daemon, "DELETE", f"/api/v1/maintenance-windows/{window['id']}")
        await wait_for(lambda: _count(receiver, "oncall", quiet + 1))  # reminders resume
        await call(daemon, "PATCH", f"/api/v1/outages/{outage_id}", {"acknowledged_by": "eve"})

        async def acknowledged() -> bool:
            return any(e["type"] == "outage.acknowledged" for e in receiver.events("oncall"))

        await wait_for(acknowledged)
        settled = len(receiver.got["oncall"])
        await asyncio.sleep(1.6)
        assert len(receiver.got["oncall"]) == settled  # acknowledged: no more reminders
    kinds = [e["type"] for e in receiver.events("oncall")]
    assert kinds[0] == "outage.opened" and kinds[-1] == "outage.acknowledged"
    reminders = [e for e in receiver.events("oncall") if e["type"] == "outage.reminder"]
    assert len(reminders) >= 2 and all(r["open_for_s"] > 0 for r in reminders)
    assert reminders[1]["open_for_s"] - reminders[0]["open_for_s"] >= 1.0


async def _count_async(receiver: Receiver, name: str, count: int) -> bool:
    return len(receiver.got.get(name, [])) >= count


def _count(receiver: Receiver, name: str, count: int) -> Any:
    return _count_async(receiver, name, count)


async def test_the_event_and_the_outage_change_commit_together(repo: Any):
    from availmon.errors import StorageError
    from availmon.model import Severity
    from availmon.notify.config import WebhookSettings
    from availmon.notify.outbox import Outbox
    from availmon.specs import ENDPOINT_ADAPTER

    spec = ENDPOINT_ADAPTER.validate_python({"name": "db", "url": "tcp://127.0.0.1:9"})
    endpoint = await repo.create_endpoint(spec)
    repo.events = Outbox(repo.pool, [WebhookSettings(name="n", url="http://127.0.0.1:9/")])
    await repo.pool.execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'outbox refuses'; END$$; "
        "CREATE TRIGGER refuse BEFORE INSERT ON notification_deliveries "
        "FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    now = datetime.now(UTC)
    with pytest.raises(StorageError, match="outbox refuses"):
        await repo.open_outage(endpoint.id, Severity.HIGH, now, now)
    assert await repo.pool.fetchval("SELECT count(*) FROM outages") == 0  # rolled back too
    assert await repo.pool.fetchval("SELECT count(*) FROM notification_events") == 0
    await repo.pool.execute("DROP TRIGGER refuse ON notification_deliveries")
    outage = await repo.open_outage(endpoint.id, Severity.HIGH, now, now)
    await repo.pool.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON notification_deliveries "
        "FOR EACH ROW EXECUTE FUNCTION refuse()"
    )
    with pytest.raises(StorageError):
        await repo.close_outage(outage.id, now + timedelta(minutes=5))
    assert (await repo.get_outage(outage.id)).ended_at is None  # still open: nothing half-done
    assert await repo.pool.fetchval("SELECT count(*) FROM notification_events") == 1
