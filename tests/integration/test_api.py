"""HTTP API: CRUD, validation errors with fields, auth, pagination, check now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from availmon.app import Daemon, build_daemon

from .test_daemon import Target, settings_for

TOKEN = "s3cret-token"


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.start()
    yield t
    await t.stop()


@pytest.fixture
async def daemon(pg_dsn: str, target: Target) -> AsyncIterator[Daemon]:
    endpoints = [{"name": "from-file", "url": target.url, "check_interval": 30, "timeout": 1}]
    async with build_daemon(settings_for(pg_dsn, endpoints, token=TOKEN)) as d:
        yield d


class Api:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            if not text:
                return resp.status, None
            if path == "/metrics" and resp.status == 200:  # the Prometheus text format
                assert resp.content_type == "text/plain", text
                return resp.status, text
            assert resp.content_type == "application/json", text
            return resp.status, await resp.json()


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        assert daemon.api_port
        yield Api(session, daemon.api_port)


def fields(body: Any) -> dict[str, str]:
    return {f["field"]: f["message"] for f in body["error"]["fields"]}


async def test_crud_roundtrip(api: Api, target: Target, daemon: Daemon):
    status, created = await api.call(
        "POST",
        "/api/v1/endpoints",
        {"name": "api-made", "url": target.url, "check_interval": 30, "timeout": 2, "tags": ["x"]},
    )
    assert status == 201, created
    assert created["source"] == "api" and created["protocol"] == "http"
    endpoint_id = created["id"]
    assert endpoint_id in daemon.monitor and endpoint_id in daemon.scheduler

    status, got = await api.call("GET", f"/api/v1/endpoints/{endpoint_id}")
    assert status == 200 and got["name"] == "api-made" and got["tags"] == ["x"]

    status, patched = await api.call("PATCH", f"/api/v1/endpoints/{endpoint_id}", {"timeout": 3})
    assert status == 200 and patched["timeout"] == 3 and patched["check_interval"] == 30
    assert daemon.monitor.get(endpoint_id).endpoint.spec.timeout == 3

    status, listing = await api.call("GET", "/api/v1/endpoints")
    assert {e["name"] for e in listing["items"]} == {"from-file", "api-made"}

    status, _ = await api.call("DELETE", f"/api/v1/endpoints/{endpoint_id}")
    assert status == 204
    assert endpoint_id not in daemon.monitor and endpoint_id not in daemon.scheduler
    status, body = await api.call("GET", f"/api/v1/endpoints/{endpoint_id}")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_bad_input_is_4xx_with_field_errors(api: Api):
    status, body = await api.call(
        "POST",
        "/api/v1/endpoints",
        {
            "name": "bad",
            "url": "http://127.0.0.1:1/",
            "check_interval": 5,
            "timeout": 10,
            "severity": "urgent",
            "colour": "red",
        },
    )
    assert status == 422
    assert body["error"]["code"] == "validation_error"
    assert fields(body) == {
        "timeout": "timeout (10 s) must be less than check_interval (5 s)",
        "severity": "Input should be 'critical', 'high', 'medium' or 'low'",
        "colour": "unknown key for a http endpoint",
    }
    status, body = await api.call(
        "POST",
        "/api/v1/endpoints",
        {"name": "t", "url": "tcp://127.0.0.1:1", "expected_status_code": 200},
    )
    assert status == 422 and fields(body) == {
        "expected_status_code": "unknown key for a tcp endpoint"
    }
    status, body = await api.call("POST", "/api/v1/endpoints", {"url": "http://127.0.0.1:1/"})
    assert status == 422 and fields(body) == {"name": "Field required"}
    status, body = await api.call("POST", "/api/v1/endpoints", raw=b"{not json")
    assert status == 422 and "not valid JSON" in body["error"]["message"]
    status, body = await api.call("POST", "/api/v1/endpoints", [1, 2])
    assert status == 422 and "JSON object" in body["error"]["message"]
    status, body = await api.call("GET", "/api/v1/endpoints/abc")
    assert status == 422 and fields(body) == {"id": "'abc' is not an integer id"}
    status, body = await api.call("GET", "/api/v1/outages?severity=urgent&limit=0&bogus=1")
    assert status == 422
    assert set(fields(body)) == {"severity", "limit", "bogus"}
    status, body = await api.call("GET", "/api/v1/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_duplicate_name_is_409(api: Api, target: Target):
    status, body = await api.call(
        "POST", "/api/v1/endpoints", {"name": "from-file", "url": target.url}
    )
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_config_owned_endpoint_refuses_api_changes(api: Api, daemon: Daemon):
    endpoint_id = daemon.monitor.all()[0].endpoint.id
    status, body = await api.call("PATCH", f"/api/v1/endpoints/{endpoint_id}", {"timeout": 2})
    assert status == 409 and "edit the file" in body["error"]["message"]
    status, body = await api.call("DELETE", f"/api/v1/endpoints/{endpoint_id}")
    assert status == 409


async def test_writes_need_the_token_reads_do_not(api: Api, target: Target):
    status, body = await api.call(
        "POST", "/api/v1/endpoints", {"name": "x", "url": target.url}, token=None
    )
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await api.call(
        "POST", "/api/v1/endpoints", {"name": "x", "url": target.url}, token="wrong"
    )
    assert status == 401
    status, _ = await api.call("GET", "/api/v1/endpoints", token=None)
    assert status == 200
    status, _ = await api.call("GET", "/healthz", token=None)
    assert status == 200


async def test_check_now_records_and_paginates(api: Api, daemon: Daemon, target: Target):
    endpoint_id = daemon.monitor.all()[0].endpoint.id
    for _ in range(5):
        status, result = await api.call("POST", f"/api/v1/endpoints/{endpoint_id}/check")
        assert status == 200
        assert result["status"] == "UP" and result["reason"] == "ok"
        assert result["details"]["status_code"] == 200
    await daemon.writer.flush()
    status, page1 = await api.call("GET", f"/api/v1/endpoints/{endpoint_id}/statuses?limit=3")
    assert status == 200 and page1["count"] == 3 and page1["next_before"]
    status, page2 = await api.call(
        "GET",
        f"/api/v1/endpoints/{endpoint_id}/statuses",
    )
    times = [i["checked_at"] for i in page2["items"]]
    assert len(times) >= 5 and times == sorted(times, reverse=True)
    async with api.session.get(
        api.base + f"/api/v1/endpoints/{endpoint_id}/statuses",
        params={"limit": "3", "before": page1["next_before"]},
    ) as resp:
        rest = await resp.json()
    assert [i["checked_at"] for i in rest["items"]] == times[3:6]
    status, body = await api.call("GET", f"/api/v1/endpoints/{endpoint_id}/statuses?from=yesterday")
    assert status == 422 and "from" in fields(body)
    statuses = f"/api/v1/endpoints/{endpoint_id}/statuses"
    status, body = await api.call(
        "GET", f"{statuses}?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"
    )
    assert status == 422 and body["error"]["fields"] == [
        {"field": "from", "message": "must be before to"}
    ]
    status, body = await api.call("GET", f"{statuses}?limit=1&limit=2")
    assert status == 422 and body["error"]["fields"] == [
        {"field": "limit", "message": "given 2 times; give it once"}
    ]
    status, body = await api.call("GET", "/api/v1/status?foo=1")
    assert status == 422 and body["error"]["fields"] == [
        {"field": "foo", "message": "unknown query parameter"}
    ]


async def test_body_over_limit_is_413(api: Api):
    status, body = await api.call("POST", "/api/v1/endpoints", raw=b"[" + b"1," * 200_000 + b"1]")
    assert status == 413 and body["error"]["code"] == "body_too_large"


async def test_deleting_an_endpoint_closes_its_open_outage(api: Api, daemon: Daemon):
    status, created = await api.call(
        "POST",
        "/api/v1/endpoints",
        {"name": "doomed", "url": "tcp://127.0.0.1:9", "check_interval": 60, "timeout": 1},
    )
    assert status == 201
    for _ in range(3):
        await api.call("POST", f"/api/v1/endpoints/{created['id']}/check")
    status, outages = await api.call("GET", f"/api/v1/outages?active=true&endpoint={created['id']}")
    (outage,) = outages["items"]
    assert outage["severity"] == "high" and outage["reason"] == "refused"
    status, _ = await api.call("DELETE", f"/api/v1/endpoints/{created['id']}")
    assert status == 204
    status, closed = await api.call("GET", f"/api/v1/outages/{outage['id']}")
    assert status == 200 and closed["is_active"] is False and closed["ended_at"]
