"""Bad input at the edges, through the real daemon: numbers and times past what Python or
PostgreSQL can hold, ids past bigint, NUL and lone surrogates in names, cross-field window
rules that name their field (each a 4xx JSON error naming the field, never a 500 or 503, and
nothing stored), and requests aiohttp's own parser refuses (a 400 and one warning)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs
from yarl import URL

from availmon.app import Daemon

from .test_api import TOKEN, Api, api, daemon, fields, target

__all__ = ["api", "daemon", "target"]  # the fixtures

WINDOWS = "/api/v1/maintenance-windows"
RANGE = "must be between 1970-01-01T00:00:00Z and 9000-01-01T00:00:00Z"
SPAN = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"}
RECURRING = {"cron": "0 2 * * *", "duration": "2h", "timezone": "UTC"}


async def refused(api: Api, method: str, path: str, body: Any = None) -> dict[str, str]:
    status, answer = await api.call(method, path, body)
    assert status == 422, (path, body, answer)
    return fields(answer)


async def stored_windows(api: Api) -> list[str]:
    status, listing = await api.call("GET", WINDOWS)
    assert status == 200
    return [w["name"] for w in listing["items"]]


OUT_OF_RANGE = "must be more than 0 and at most 31 days"


@pytest.mark.parametrize(
    "duration,message",
    [(999999999999999999999, OUT_OF_RANGE), (10**30, OUT_OF_RANGE), (1e300, OUT_OF_RANGE),
     (-5, OUT_OF_RANGE), (0, OUT_OF_RANGE), (31 * 86400 + 1, OUT_OF_RANGE),
     ("99999999999999999999d", OUT_OF_RANGE), ("32d", OUT_OF_RANGE),
     ("-1h", "'-1h' is not a duration: use seconds or e.g. '2h', '1h30m', '90m'")],
)  # fmt: skip
async def test_a_window_duration_out_of_range_is_a_field_error(
    api: Api, duration: Any, message: str
):
    body = {"name": "bad15", "all": True, **RECURRING, "duration": duration}
    assert await refused(api, "POST", WINDOWS, body) == {"duration": message}
    assert await stored_windows(api) == []


async def test_a_window_duration_at_the_limit_is_taken(api: Api):
    body = {"name": "month", "all": True, **RECURRING, "duration": 31 * 86400}
    status, created = await api.call("POST", WINDOWS, body)
    assert status == 201, created
    assert created["duration_s"] == 31 * 86400


@pytest.mark.parametrize(
    "start,end,bad",
    [
        ("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z", {"start_time", "end_time"}),
        ("0001-01-01T00:00:00+05:00", "2026-01-01T00:00:00Z", {"start_time"}),
        ("2026-01-01T00:00:00Z", "9999-12-31T23:59:59-05:00", {"end_time"}),
        ("2026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", {"end_time"}),
        ("1969-12-31T23:59:59Z", "2026-01-01T00:00:00Z", {"start_time"}),
    ],
)
async def test_window_times_at_extreme_years_are_refused(
    api: Api, start: str, end: str, bad: set[str]
):
    body = {"name": "old", "all": True, "start_time": start, "end_time": end}
    assert await refused(api, "POST", WINDOWS, body) == dict.fromkeys(bad, RANGE)
    assert await stored_windows(api) == []


async def test_window_times_at_the_bounds_come_back_with_their_offset(api: Api):
    body = {"name": "edges", "all": True, "start_time": "1970-01-01T00:00:00Z",
            "end_time": "9000-01-01T00:00:00Z"}  # fmt: skip
    status, created = await api.call("POST", WINDOWS, body)
    assert status == 201, created
    assert created["start_time"] == "1970-01-01T00:00:00+00:00"
    assert created["end_time"] == "9000-01-01T00:00:00+00:00"
    status, fetched = await api.call("GET", f"{WINDOWS}/{created['id']}")
    assert fetched == created


async def test_query_times_at_extreme_years_are_refused(api: Api, daemon: Daemon):
    endpoint_id = daemon.monitor.all()[0].endpoint.id
    status, _ = await api.call("POST", WINDOWS, {"name": "w", "all": True, **RECURRING})
    assert status == 201
    for path, key in [
        (f"/api/v1/endpoints/{endpoint_id}/maintenance?at=0001-01-01T00:00:00%2B05:00", "at"),
        (f"/api/v1/endpoints/{endpoint_id}/maintenance?at=9999-12-31T23:59:59-05:00", "at"),
        (f"/api/v1/endpoints/{endpoint_id}/statuses?before=9999-12-31T23:59:59Z", "before"),
        (f"/api/v1/endpoints/{endpoint_id}/uptime?from=0001-01-01T00:00:00Z", "from"),
    ]:
        assert await refused(api, "GET", path) == {key: RANGE}
    status, view = await api.call(
        "GET", f"/api/v1/endpoints/{endpoint_id}/maintenance?at=1970-01-01T00:00:00Z"
    )
    assert status == 200 and view["next"]["start"] == "1970-01-01T02:00:00+00:00"


async def test_ids_past_bigint_are_field_errors_not_storage_errors(api: Api):
    too_big = "be less than or equal to 9223372036854775807"
    for endpoint_id in (9999999999999999999999, 2**63):
        body = {"name": "w", "endpoint_id": endpoint_id, **SPAN}
        expected = {"endpoint_id": f"Input should {too_big}"}
        assert await refused(api, "POST", WINDOWS, body) == expected
    status, created = await api.call("POST", WINDOWS, {"name": "w", "all": True, **SPAN})
    assert status == 201
    patch = {"endpoint_id": 2**63}
    assert "endpoint_id" in await refused(api, "PATCH", f"{WINDOWS}/{created['id']}", patch)
    for path in [
        "/api/v1/endpoints/99999999999999999999",
        "/api/v1/endpoints/9223372036854775808",
        "/api/v1/endpoints/9223372036854775808/statuses",
        "/api/v1/outages/99999999999999999999",
        f"{WINDOWS}/9223372036854775808",
    ]:
        assert set(await refused(api, "GET", path)) == {"id"}
    assert set(await refused(api, "GET", "/api/v1/outages?endpoint_id=99999999999999999999")) == {
        "endpoint"
    }
    status, _ = await api.call("GET", "/api/v1/endpoints/9223372036854775807")
    assert status == 404  # the largest bigint is a valid id, just not one that exists
    assert await stored_windows(api) == ["w"]  # the refused PATCH changed nothing
    status, fetched = await api.call("GET", f"{WINDOWS}/{created['id']}")
    assert fetched == created


async def test_names_with_nul_or_lone_surrogates_are_not_found_or_refused(api: Api):
    async with aiohttp.ClientSession() as session:
        for path in ["/badge/%00/status.svg", "/badge/a%00b/uptime/24h.svg"]:
            url = URL(api.base + path, encoded=True)
            async with session.get(url) as resp:
                assert resp.status == 404, await resp.text()
                assert (await resp.json())["error"]["code"] == "not_found"
        async with session.get(URL(api.base + "/badge/from-file/status.svg")) as resp:
            assert resp.status == 200  # a real name still answers
    raw = b'{"name": "\\ud800x", "url": "http://127.0.0.1:1/"}'
    status, body = await api.call("POST", "/api/v1/endpoints", raw=raw)
    assert status == 422
    assert fields(body) == {"name": "must not contain a lone surrogate (U+D800)"}
    raw = b'{"name": "w", "all": true, "tags": ["\\udfff"], "description": "\\u0000"}'
    status, body = await api.call("POST", WINDOWS, raw=raw)
    assert status == 422 and fields(body) == {
        "description": "must not contain the NUL character (U+0000)",
        "tags[0]": "must not contain a lone surrogate (U+DFFF)",
    }


async def test_cross_field_window_rules_name_their_fields(api: Api, daemon: Daemon):
    endpoint_id = daemon.monitor.all()[0].endpoint.id
    target = "give exactly one target: an endpoint, tags, or all = true"
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({"all": True, **RECURRING, "cron": "0 2 * *"},
         {"cron": "'0 2 * *' must have 5 fields: minute hour day-of-month month weekday"}),
        ({"all": True, **RECURRING, "cron": "0 0 30 2 *"},
         {"cron": "'0 0 30 2 *' is not a valid cron expression: Bad day-of-month"}),
        ({"all": True, **RECURRING, "timezone": "Nowhere/City"},
         {"timezone": "'Nowhere/City' is not an IANA time zone (e.g. 'Europe/Berlin')"}),
        ({"all": True, **RECURRING, "timezone": "Europe"},
         {"timezone": "'Europe' is not an IANA time zone (e.g. 'Europe/Berlin')"}),
        ({"all": True, "cron": "0 2 * * *", "timezone": "UTC"},
         {"duration": "a recurring window needs cron, duration and timezone"}),
        ({"all": True, **SPAN, "duration": "1h"},
         {"duration": "duration and timezone apply only with cron"}),
        ({**SPAN}, {"endpoint_id": target, "tags": target, "all": target}),
        ({**SPAN, "endpoint_id": endpoint_id, "tags": ["x"]},
         {"endpoint_id": target, "tags": target}),
        ({"all": True, "start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"},
         {"end_time": "end_time must be after start_time"}),
        ({"all": True, "start_time": "2026-01-02T00:00:00Z"},
         {"end_time": "a one-off window needs start_time and end_time"}),
        ({"all": True, **SPAN, "name": "  "}, {"name": "must not be empty"}),
    ]  # fmt: skip
    for extra, expected in cases:
        assert await refused(api, "POST", WINDOWS, {"name": "w", **extra}) == expected, extra
    assert await stored_windows(api) == []


async def test_requests_the_http_parser_refuses_are_one_warning_without_a_traceback(
    api: Api, daemon: Daemon, caplog: pytest.LogCaptureFixture
):
    """aiohttp answers these itself, before the app, in plain text (see api.app.ServerLog)."""
    duplicate = (
        b"POST /api/v1/endpoints HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n{}"
    )
    long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for raw in (duplicate, long_line):
        with capture_logs() as logs, caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.api_port)
            writer.write(raw)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.split(b" ")[1] == b"400", answer[:200]
        rejected = [e for e in logs if e["event"] == "http_request_rejected"]
        assert len(rejected) == 1 and rejected[0]["log_level"] == "warning", logs
        assert rejected[0]["status"] == 400 and rejected[0]["reason"]
        assert "exc_info" not in rejected[0]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        caplog.clear()
    status, _ = await api.call("GET", "/api/v1/endpoints")
    assert status == 200  # the daemon serves on


async def test_window_targets_and_switches_are_not_coerced(api: Api):
    """`"endpoint_id": true` was endpoint 1, `"all": 1` every endpoint."""
    for body, field, message in [
        ({"endpoint_id": True}, "endpoint_id", "Input should be a valid integer"),
        ({"endpoint_id": "5"}, "endpoint_id", "Input should be a valid integer"),
        ({"all": 1}, "all", "Input should be a valid boolean"),
        ({"all": True, "is_active": "yes"}, "is_active", "Input should be a valid boolean"),
    ]:
        assert await refused(api, "POST", WINDOWS, {"name": "w", **body, **SPAN}) == {
            field: message
        }
    assert await stored_windows(api) == []
