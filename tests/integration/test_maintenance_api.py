"""Maintenance windows through the daemon: config and API windows, CRUD and its errors, the
per-endpoint view, and what a window does to checks and outages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from availmon.app import build_daemon

from .test_daemon import db_rows, wait_for
from .test_outages import Switch, call, outages, settings, switch, web_endpoint

__all__ = ["switch"]  # the fixture


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def test_config_window_records_maintenance_with_the_raw_result_and_opens_nothing(
    pg_dsn: str, switch: Switch
):
    switch.mode = "down"
    now = datetime.now(UTC)
    span = {"start_time": now - timedelta(minutes=1), "end_time": now + timedelta(hours=1)}
    windows = [
        {"name": "swap-pool", "endpoint": "web", **span},
        {"name": "typo", "endpoint": "wbe", **span},  # names no endpoint: logged, inert
    ]
    config = settings(pg_dsn, [web_endpoint(switch)], maintenance=windows)
    with capture_logs() as logs:
        daemon_cm = build_daemon(config)
        daemon = await daemon_cm.__aenter__()
    assert {"event": "maintenance_endpoint_unknown", "window": "typo", "endpoint": "wbe",
            "log_level": "error"} in logs  # fmt: skip
    try:
        before = daemon.monitor.checks_executed

        async def checks() -> bool:
            return daemon.monitor.checks_executed >= before + 8

        await wait_for(checks)
        await daemon.writer.flush()
        endpoint_id = daemon.monitor.all()[0].endpoint.id
        status, view = await call(daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/maintenance")
        assert status == 200 and view["in_maintenance"] is True
        assert view["current"]["window"]["name"] == "swap-pool"
        assert view["current"]["window"]["source"] == "config"
        window_id = view["current"]["window"]["id"]
        status, body = await call(
            daemon, "PATCH", f"/api/v1/maintenance-windows/{window_id}", {"name": "x"}
        )
        assert status == 409 and "config file" in body["error"]["message"]
        status, _ = await call(daemon, "DELETE", f"/api/v1/maintenance-windows/{window_id}")
        assert status == 409
        summary = await call(daemon, "GET", "/api/v1/status")
        assert summary[1]["endpoints"][0]["status"] == "MAINTENANCE"
        status, listing = await call(daemon, "GET", "/api/v1/maintenance-windows")
        typo = next(w for w in listing["items"] if w["name"] == "typo")
        assert typo["endpoint_id"] is None and typo["source"] == "config"
    finally:
        await daemon_cm.__aexit__(None, None, None)
    rows = await db_rows(pg_dsn, "SELECT status::text AS s, reason, details FROM statuses")
    rows = [{**r, "details": json.loads(r["details"])} for r in rows]
    assert len(rows) >= 8
    assert {r["s"] for r in rows} == {"MAINTENANCE"}
    assert {r["details"]["raw_status"] for r in rows} == {"DOWN"}  # the real result is kept
    assert {r["reason"] for r in rows} == {"unexpected_status"}
    assert {r["details"]["maintenance_window_id"] for r in rows} == {window_id}
    assert await outages(pg_dsn) == []


async def test_window_starting_mid_outage_lets_it_close_on_recovery_and_opens_nothing(
    pg_dsn: str, switch: Switch
):
    switch.mode = "down"
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch, tags=["pool"])])) as daemon:

        async def opened() -> bool:
            return len(await outages(pg_dsn)) == 1

        await wait_for(opened)
        now = datetime.now(UTC)
        status, window = await call(
            daemon,
            "POST",
            "/api/v1/maintenance-windows",
            {
                "name": "pool work",
                "tags": ["pool"],
                "start_time": iso(now - timedelta(seconds=1)),
                "end_time": iso(now + timedelta(hours=1)),
            },
        )
        assert status == 201, window
        assert window["source"] == "api" and window["tags"] == ["pool"]
        switch.mode = "up"

        async def closed() -> bool:
            return (await outages(pg_dsn))[0]["ended_at"] is not None

        await wait_for(closed)  # the outage open before the window closes normally
        switch.mode = "down"
        before = daemon.monitor.checks_executed

        async def checks() -> bool:
            return daemon.monitor.checks_executed >= before + 6

        await wait_for(checks)
        assert len(await outages(pg_dsn)) == 1  # failures inside the window open nothing
        status, _ = await call(daemon, "DELETE", f"/api/v1/maintenance-windows/{window['id']}")
        assert status == 204
        status, _ = await call(daemon, "GET", f"/api/v1/maintenance-windows/{window['id']}")
        assert status == 404

        async def reopened() -> bool:
            return len(await outages(pg_dsn)) == 2

        await wait_for(reopened)
        await daemon.writer.flush()
    first, second = await outages(pg_dsn)
    rows = await db_rows(
        pg_dsn,
        "SELECT checked_at, status::text AS s, details FROM statuses ORDER BY checked_at",
    )
    rows = [{**r, "details": json.loads(r["details"])} for r in rows]
    in_window = [r for r in rows if r["s"] == "MAINTENANCE"]
    first_up = next(r for r in in_window if r["details"]["raw_status"] == "UP")
    assert first["ended_at"] == first_up["checked_at"]  # first good check, inside the window
    after = [r for r in rows if r["checked_at"] > in_window[-1]["checked_at"]]
    assert second["started_at"] == after[0]["checked_at"]  # counted from after the window


async def test_maintenance_crud_validation_and_the_endpoint_view(pg_dsn: str, switch: Switch):
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch, tags=["edge"])])) as daemon:
        endpoint_id = daemon.monitor.all()[0].endpoint.id
        base = "/api/v1/maintenance-windows"
        status, body = await call(daemon, "POST", base, {"name": "x", "all": True})
        assert status == 422
        assert body["error"]["fields"] == [
            {"field": "start_time", "message": "a one-off window needs start_time and end_time"},
            {"field": "end_time", "message": "a one-off window needs start_time and end_time"},
        ]
        status, body = await call(
            daemon,
            "POST",
            base,
            {"name": "x", "endpoint_id": 987654, "cron": "0 2 * * TUE", "duration": "2h",
             "timezone": "Europe/Berlin"},
        )  # fmt: skip
        assert status == 422
        assert body["error"]["fields"][0]["field"] == "endpoint_id"
        status, body = await call(daemon, "POST", base, {"name": "x", "all": True, "id": 3})
        assert status == 422 and body["error"]["fields"][0] == {
            "field": "id",
            "message": "is read-only",
        }
        weekly = {
            "name": "patch tuesday",
            "description": "OS updates",
            "endpoint_id": endpoint_id,
            "cron": "0 2 * * TUE",
            "duration": "2h",
            "timezone": "Europe/Berlin",
        }
        status, created = await call(daemon, "POST", base, weekly)
        assert status == 201, created
        assert created["duration_s"] == 7200 and created["endpoint_id"] == endpoint_id
        path = f"{base}/{created['id']}"
        # 2026-03-31 is the first Tuesday of summer time: 02:00 CEST is 00:00 UTC
        status, view = await call(
            daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/maintenance?at=2026-03-31T00:30:00Z"
        )
        assert view["in_maintenance"] is True
        assert view["current"]["start"] == "2026-03-31T00:00:00+00:00"
        assert view["current"]["end"] == "2026-03-31T02:00:00+00:00"
        assert view["next"]["start"] == "2026-04-07T00:00:00+00:00"
        status, view = await call(
            daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/maintenance?at=2026-03-24T00:30:00Z"
        )
        assert view["in_maintenance"] is False  # 02:00 CET is 01:00 UTC the week before
        assert view["next"]["start"] == "2026-03-24T01:00:00+00:00"
        # a PATCH with a new target replaces the old one; the window is revalidated whole
        status, patched = await call(daemon, "PATCH", path, {"tags": ["edge"], "is_active": False})
        assert status == 200, patched
        assert patched["endpoint_id"] is None and patched["tags"] == ["edge"]
        assert patched["is_active"] is False and patched["cron"] == "0 2 * * TUE"
        status, view = await call(
            daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/maintenance?at=2026-03-31T00:30:00Z"
        )
        assert view["in_maintenance"] is False
        status, body = await call(daemon, "PATCH", path, {"timezone": "Nowhere/City"})
        assert status == 422
        status, listing = await call(daemon, "GET", base)
        assert [w["name"] for w in listing["items"]] == ["patch tuesday"]
        status, body = await call(
            daemon, "GET", f"/api/v1/endpoints/{endpoint_id}/maintenance?at=x"
        )
        assert status == 422 and body["error"]["fields"][0]["field"] == "at"
    # a restart reloads API windows from PostgreSQL
    async with build_daemon(settings(pg_dsn, [web_endpoint(switch, tags=["edge"])])) as daemon:
        names = [w.name for w in daemon.availability.maintenance.calendar.windows()]
        assert names == ["patch tuesday"]
