"""Bad input and security: SQL injection through every string field, nothing half-applied,
unknown fields, body size, 404s, the bearer token (writes, reads, constant time), and no token
or password in logs or API output (a real `availmon run` with a password-protected role)."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from availmon.app import Daemon, build_daemon
from availmon.config import load_settings
from availmon.errors import ConfigError

from .test_api import TOKEN, Api
from .test_daemon import settings_for

ROOT = Path(__file__).parents[2]
MISSING_ID = 987_654_321
HOSTILE = [
    "x'; DROP TABLE statuses; --",
    "'); DELETE FROM endpoints; --",
    "' OR '1'='1",
    '"; DROP TABLE endpoints CASCADE; --',
    "$1 \\'; TRUNCATE outages; -- ",
    "%' UNION SELECT spec::text FROM endpoints --",
]
FROM_FILE = {"name": "from-file", "url": "tcp://127.0.0.1:9", "check_interval": 60, "timeout": 1}
SLOW = {"check_interval": 3600, "timeout": 1}


@pytest.fixture
async def daemon(pg_dsn: str) -> AsyncIterator[Daemon]:
    async with build_daemon(settings_for(pg_dsn, [FROM_FILE], token=TOKEN)) as d:
        yield d


@pytest.fixture
async def api(daemon: Daemon) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        assert daemon.api_port
        yield Api(session, daemon.api_port)


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)  # may be several statements
    finally:
        await conn.close()


async def assert_tables_intact(dsn: str, live_endpoints: int) -> None:
    for table in ("endpoints", "statuses", "outages"):
        (row,) = await fetch(dsn, "SELECT to_regclass($1) IS NOT NULL AS ok", table)
        assert row["ok"], table
    rows = await fetch(dsn, "SELECT count(*) AS n FROM endpoints WHERE deleted_at IS NULL")
    assert rows[0]["n"] == live_endpoints


def hostile_endpoints(folder: Path) -> list[dict[str, Any]]:
    """One endpoint per protocol with SQL in every string field (what each field can hold: a
    url has no spaces, a header name is a token, a ca_file names a file that is there)."""
    h = HOSTILE
    ca_file = folder / f"{h[1]}.pem"
    ca_file.write_text("not a certificate: the check fails, as data")
    return [
        {
            "name": "inj http ) OR (1 -- DROP TABLE statuses",
            "url": "http://127.0.0.1:9/" + quote(h[0], safe="';-"),
            "tags": h,
            "expected_pattern": h[5],
            "headers": {"X-Inj": h[2], "X-'|'DROP_TABLE_endpoints'--": h[3]},
            "method": "POST",
            "body": h[4],
            **SLOW,
        },
        {
            "name": "inj tcp",
            "url": "tcp://127.0.0.1:9",
            "send": h[0],
            "tls": True,
            "ca_file": str(ca_file),
            "tags": [h[5]],
            **SLOW,
        },
        {"name": "inj udp", "url": "udp://127.0.0.1:9", "send": h[3], "expected_pattern": h[0]},
        {
            "name": "inj dns",
            "url": "dns://127.0.0.1:9/example.test",
            "record_type": "TXT",
            "expected_answers": h,
            **SLOW,
        },
        {"name": "inj icmp", "url": "127.0.0.1", "tags": [h[2], h[4]], **SLOW},
    ]


def assert_same(given: dict[str, Any], stored: dict[str, Any]) -> None:
    for key, value in given.items():
        if key == "url" and "://" not in value:
            value = f"icmp://{value}"
        assert stored[key] == value, key


async def test_injection_through_every_string_field_is_stored_verbatim(
    api: Api, daemon: Daemon, pg_dsn: str, tmp_path: Path
):
    created = {}
    for body in hostile_endpoints(tmp_path):
        status, endpoint = await api.call("POST", "/api/v1/endpoints", body)
        assert status == 201, endpoint
        assert_same(body, endpoint)
        created[endpoint["id"]] = body
    status, listing = await api.call("GET", "/api/v1/endpoints")
    by_id = {e["id"]: e for e in listing["items"]}
    for endpoint_id, body in created.items():
        assert_same(body, by_id[endpoint_id])
        (row,) = await fetch(pg_dsn, "SELECT spec FROM endpoints WHERE id = $1", endpoint_id)
        assert_same(body, json.loads(row["spec"]))  # in PostgreSQL as given, not just echoed
    http_id = next(iter(created))
    patch = {"tags": list(reversed(HOSTILE)), "expected_pattern": HOSTILE[0]}
    status, patched = await api.call("PATCH", f"/api/v1/endpoints/{http_id}", patch)
    assert status == 200 and patched["tags"] == patch["tags"]
    status, got = await api.call("GET", f"/api/v1/endpoints/{http_id}")
    assert_same(patch, got)
    # a check of the endpoint with the hostile headers and body: failure is data, not a 500
    status, result = await api.call("POST", f"/api/v1/endpoints/{http_id}/check")
    assert status == 200 and result["status"] == "DOWN", result
    await assert_tables_intact(pg_dsn, 1 + len(created))


async def test_injection_through_names_query_and_path_is_refused(api: Api, pg_dsn: str):
    for name in HOSTILE:
        status, body = await api.call(
            "POST", "/api/v1/endpoints", {"name": name, "url": "tcp://127.0.0.1:9"}
        )
        assert status == 422 and [f["field"] for f in body["error"]["fields"]] == ["name"]
    for value in HOSTILE:
        q = quote(value, safe="")
        for path in (
            f"/api/v1/outages?severity={q}",
            f"/api/v1/outages?endpoint={q}",
            f"/api/v1/endpoints/1/statuses?from={q}",
            f"/api/v1/endpoints/1/statuses?limit={q}",
            f"/api/v1/endpoints/{q}",
            f"/api/v1/outages/{q}",
        ):
            status, body = await api.call("GET", path)
            assert status == 422 and body["error"]["code"] == "validation_error", (path, body)
    await assert_tables_intact(pg_dsn, 1)


async def test_what_postgresql_cannot_store_is_refused_with_a_422(api: Api, pg_dsn: str):
    """U+0000, NaN, Infinity and 1e400 (which json reads as inf), that jsonb cannot hold, and
    bodies too deep or numbers too long to parse: a 422, not a 503 (or a 500)."""
    body = {"name": "nul", "url": "tcp://127.0.0.1:9", "tags": ["ok", "a\u0000b"], **SLOW}
    status, answer = await api.call("POST", "/api/v1/endpoints", body)
    assert status == 422, answer
    assert [f["field"] for f in answer["error"]["fields"]] == ["tags[1]"]
    status, answer = await api.call("POST", "/api/v1/endpoints", {"a\u0000": 1})
    assert status == 422 and answer["error"]["fields"][0]["field"] == '"a\\u0000"'
    prefix = b'{"name": "n", "url": "tcp://127.0.0.1:9", "degraded_threshold_ms": '
    for raw in (
        prefix + b"NaN}",
        prefix + b"Infinity}",
        prefix + b"1e400}",
        prefix + b"1" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"tags": ' + b"[" * 900 + rb'"\u0000"' + b"]" * 900 + b"}",
    ):
        status, answer = await api.call("POST", "/api/v1/endpoints", raw=raw)
        assert status == 422, (raw[:80], answer)
    await assert_tables_intact(pg_dsn, 1)


async def test_header_injection_is_refused_with_a_422_naming_the_field(api: Api, pg_dsn: str):
    """A CR or LF in a header would end its line on the wire and start one of the caller's."""
    web = {"name": "hdr", "url": "http://127.0.0.1:9/", **SLOW}
    for headers, message in (
        (
            {"X-Trace": "c\r\nX-Injected: y"},
            "header 'X-Trace': the value must not contain CR (U+000D);"
            " tabs, spaces and visible Latin-1 text only",
        ),
        (
            {"X-Injected: y\r\nX-Trace": "c"},
            "header name 'X-Injected: y\\r\\nX-Trace' has ':' (U+003A): a name is a token"
            " of letters, digits and !#$%&'*+-.^_`|~ (RFC 9110)",
        ),
    ):
        status, answer = await api.call("POST", "/api/v1/endpoints", {**web, "headers": headers})
        assert status == 422, answer
        assert answer["error"]["fields"] == [{"field": "headers", "message": message}]
    status, created = await api.call("POST", "/api/v1/endpoints", web)
    assert status == 201
    patch = {"headers": {"X-Trace": "c\nX-Injected: y"}}
    status, answer = await api.call("PATCH", f"/api/v1/endpoints/{created['id']}", patch)
    assert status == 422 and [f["field"] for f in answer["error"]["fields"]] == ["headers"]
    url = "http://127.0.0.1:9/a\r\nX-Injected: y"
    status, answer = await api.call("POST", "/api/v1/endpoints", {**web, "url": url})
    assert status == 422 and [f["field"] for f in answer["error"]["fields"]] == ["url"]
    await assert_tables_intact(pg_dsn, 2)


async def test_lone_surrogates_are_refused_with_a_422_not_a_503(api: Api, pg_dsn: str):
    """ "\\ud800" is valid JSON but no text PostgreSQL can store: it answered 503
    storage_unavailable, with the database's words, after the spec had validated."""
    base = {"name": "sur", "url": "http://127.0.0.1:9/", **SLOW}
    for extra, field in (
        ({"tags": ["ok", "\ud800"]}, "tags[1]"),
        ({"headers": {"X-Trace": "\ud800"}}, "headers.X-Trace"),
        ({"body": "a\udfffb"}, "body"),
        ({"expected_pattern": "\ud800"}, "expected_pattern"),
    ):
        status, answer = await api.call("POST", "/api/v1/endpoints", {**base, **extra})
        assert status == 422, (extra, answer)
        assert answer["error"]["code"] == "validation_error"
        (problem,) = answer["error"]["fields"]
        assert problem["field"] == field and "lone surrogate" in problem["message"], problem
    status, created = await api.call("POST", "/api/v1/endpoints", base)
    assert status == 201
    status, answer = await api.call(
        "PATCH", f"/api/v1/endpoints/{created['id']}", {"tags": ["\udc00"]}
    )
    assert status == 422 and [f["field"] for f in answer["error"]["fields"]] == ["tags[0]"]
    await assert_tables_intact(pg_dsn, 2)


async def test_patterns_too_costly_to_compile_or_not_bytes_are_refused(api: Api, pg_dsn: str):
    """A pattern is compiled while the request is served: (?:a{1000}){1000} takes 270 MB
    (and (?:a{3000}){3000} 2.4 GB); "(?u)" compiles as text but not as the bytes a TCP probe
    matches, which failed when the endpoint was watched, after it was stored."""
    for url, pattern in (
        ("http://127.0.0.1:9/", "(?:a{1000}){1000}"),
        ("http://127.0.0.1:9/", "a" * 5000),
        ("tcp://127.0.0.1:9", "(?u)ok"),
        ("udp://127.0.0.1:9", "(?u)ok"),
    ):
        body = {"name": "p", "url": url, "expected_pattern": pattern, "send": "x", **SLOW}
        if url.startswith("http"):
            del body["send"]
        status, answer = await api.call("POST", "/api/v1/endpoints", body)
        assert status == 422, (pattern[:20], answer)
        assert [f["field"] for f in answer["error"]["fields"]] == ["expected_pattern"]
    await assert_tables_intact(pg_dsn, 1)


async def test_a_spec_is_stored_only_if_it_reads_back(api: Api, pg_dsn: str):
    """check_interval under the default timeout (10 s): refused, as a stored spec that no
    longer validates makes every read of the endpoints a 503 (and a restart fail)."""
    body = {"name": "fast", "url": "tcp://127.0.0.1:9", "check_interval": 5}
    status, answer = await api.call("POST", "/api/v1/endpoints", body)
    assert status == 422, answer
    assert answer["error"]["fields"] == [
        {"field": "timeout", "message": "timeout (10 s) must be less than check_interval (5 s)"}
    ]
    status, created = await api.call("POST", "/api/v1/endpoints", {**body, "check_interval": 60})
    assert status == 201
    path = f"/api/v1/endpoints/{created['id']}"
    status, answer = await api.call("PATCH", path, {"check_interval": 5})
    assert status == 422 and answer["error"]["fields"][0]["field"] == "timeout"
    status, listing = await api.call("GET", "/api/v1/endpoints")
    assert status == 200 and listing["total"] == 2
    await assert_tables_intact(pg_dsn, 2)


async def test_odd_ids_and_filters_are_4xx(api: Api):
    """Digits that int() refuses or PostgreSQL's bigint cannot hold: 422, never a 500 or 503."""
    for value in ("²", "٣", "0", str(2**63), "9" * 40, "9" * 5000, "-1", "1.0", "1_0", " 1", "+1"):
        q = quote(value, safe="")
        for path in (f"/api/v1/outages?endpoint={q}", f"/api/v1/endpoints/{q}"):
            status, body = await api.call("GET", path)
            assert status == 422, (path, body)
    status, body = await api.call("GET", f"/api/v1/endpoints/{2**63 - 1}")
    assert status == 404


async def test_unknown_fields_are_refused_and_nothing_half_applied(
    api: Api, daemon: Daemon, pg_dsn: str
):
    base = {"name": "keep", "url": "tcp://127.0.0.1:9", "timeout": 1, **SLOW}
    status, created = await api.call("POST", "/api/v1/endpoints", base)
    assert status == 201
    path = f"/api/v1/endpoints/{created['id']}"
    status, body = await api.call("POST", "/api/v1/endpoints", {**base, "name": "x", "colour": 1})
    assert status == 422 and body["error"]["fields"] == [
        {"field": "colour", "message": "unknown key for a tcp endpoint"}
    ]
    (spec_before,) = await fetch(pg_dsn, "SELECT spec FROM endpoints WHERE id = $1", created["id"])
    for patch in (
        {"timeout": 2, "colour": "red"},  # a valid field and an unknown one
        {"timeout": 2, "retries": 99},  # a valid field and an out-of-range one
        {"name": "renamed", "url": "not a url"},
        {"name": "from-file"},  # 409: the name is taken
        {"timeout": 2, "id": 5},
        {"name": "renamed", "tags": ["a\u0000"]},
    ):
        status, body = await api.call("PATCH", path, patch)
        assert status in (409, 422), (patch, body)
        status, now = await api.call("GET", path)
        assert now == created, patch
        (spec,) = await fetch(pg_dsn, "SELECT spec FROM endpoints WHERE id = $1", created["id"])
        assert spec == spec_before, patch
        assert daemon.monitor.get(created["id"]).endpoint.spec.timeout == 1
    await assert_tables_intact(pg_dsn, 2)


async def test_body_over_the_limit_is_413_also_chunked(api: Api, pg_dsn: str):
    limit = 256 * 1024
    body = {"name": "big", "url": "http://127.0.0.1:9/", "body": "", **SLOW}
    body["body"] = "x" * (limit - len(json.dumps(body)))
    exact = json.dumps(body).encode()
    assert len(exact) == limit
    status, answer = await api.call("POST", "/api/v1/endpoints", raw=exact + b" ")
    assert status == 413 and answer["error"]["code"] == "body_too_large"
    status, answer = await api.call("PATCH", "/api/v1/endpoints/1", raw=exact + b" ")
    assert status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(exact) + 1, 8192):
            yield (exact + b" ")[start : start + 8192]

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with api.session.post(
        api.base + "/api/v1/endpoints", data=chunks(), headers=headers
    ) as resp:
        assert resp.status == 413 and resp.headers.get("Content-Length") is not None
    await assert_tables_intact(pg_dsn, 1)
    status, answer = await api.call("POST", "/api/v1/endpoints", raw=exact)
    assert status == 201, answer  # the limit itself is allowed


async def operations(api: Api, token: str | None = TOKEN) -> list[tuple[str, str, Any]]:
    status, document = await api.call("GET", "/api/v1/openapi.json", token=token)
    assert status == 200
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


async def test_missing_ids_are_404_on_every_id_route(api: Api):
    routes = [(m, p, op) for m, p, op in await operations(api) if "{id}" in p]
    assert len(routes) >= 8
    for method, path, op in routes:
        body = {"notes": "n"} if "requestBody" in op else None
        for missing in (MISSING_ID, 2**63 - 1):
            status, answer = await api.call(method, path.replace("{id}", str(missing)), body)
            assert status == 404 and answer["error"]["code"] == "not_found", (method, path)


async def test_every_write_needs_the_token(api: Api):
    writes = [(m, p) for m, p, _ in await operations(api) if m != "GET"]
    assert len(writes) >= 7
    for method, path in writes:
        for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " "):
            status, answer = await api.call(method, path.replace("{id}", "1"), token=token)
            assert status == 401 and answer["error"]["code"] == "unauthorized", (path, token)
    headers = {"Authorization": f"bearer  {TOKEN} ", "Content-Type": "application/json"}
    async with api.session.post(api.base + "/api/v1/endpoints", data=b"[]", headers=headers) as r:
        assert r.status == 422  # past auth: the scheme is case-insensitive, spaces around ok
    headers["Authorization"] = f"Basic {TOKEN}"
    async with api.session.post(api.base + "/api/v1/endpoints", data=b"[]", headers=headers) as r:
        assert r.status == 401
    status, answer = await api.call("PUT", "/api/v1/endpoints")
    assert status == 405 and answer["error"]["code"] == "method_not_allowed"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with api.session.put(api.base + "/api/v1/endpoints", headers=auth) as r:
        assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}  # a 405 names them


async def test_a_token_that_is_not_utf8_is_401_not_500(api: Api):
    host, port = api.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"DELETE /api/v1/endpoints/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe" + TOKEN.encode() + b"\r\n\r\n"
    )
    status_line = (await reader.read()).split(b"\r\n", 1)[0]
    writer.close()
    assert status_line == b"HTTP/1.1 401 Unauthorized"


async def test_the_token_is_compared_in_constant_time(api: Api):
    """The comparison is hmac.compare_digest, seen as a call while a request is served (the
    in-process daemon serves on this thread's loop): no ==, which stops at the first byte."""
    seen: list[Any] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call" and arg is hmac.compare_digest:
            seen.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        status, _ = await api.call("DELETE", "/api/v1/endpoints/1", token="x" * len(TOKEN))
    finally:
        sys.setprofile(None)
    assert status == 401
    assert seen == ["auth_middleware"]


@pytest.mark.parametrize("read_protected", [False, True])
async def test_read_access_is_configurable(pg_dsn: str, read_protected: bool):
    settings = settings_for(pg_dsn, [FROM_FILE], token=TOKEN, read_token_required=read_protected)
    async with build_daemon(settings) as daemon, aiohttp.ClientSession() as session:
        assert daemon.api_port
        api = Api(session, daemon.api_port)
        reads = [p.replace("{id}", "1") for m, p, _ in await operations(api) if m == "GET"]
        assert len(reads) >= 10
        for path in reads:
            status, body = await api.call("GET", path, token=None)
            open_path = path in ("/healthz", "/readyz") or not read_protected
            assert status != 401 if open_path else status == 401, (path, body)
            status, body = await api.call("GET", path)
            assert status != 401, (path, body)


def test_read_protection_without_a_token_is_a_config_error(tmp_path: Path):
    path = tmp_path / "availmon.toml"
    path.write_text("[api]\nread_token_required = true\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.lines == [f"{path}: api: read_token_required = true needs api.token"]


@dataclass
class RunningDaemon:
    base: str
    log: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        return self.log.read_text(errors="replace")


def start_daemon(config: Path, log: Path, env: dict[str, str]) -> RunningDaemon:
    """`availmon run` as a subprocess, logging JSON into `log`; the API port is read from it."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "availmon", "--config", str(config), "run"],
            env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("event") == "availmon_started":
                return RunningDaemon(f"http://{event['api']}", log, proc)
        if proc.poll() is not None:
            raise AssertionError(f"availmon exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"availmon did not start:\n{log.read_text()}")


@pytest.fixture
async def password_dsn(pg_dsn: str) -> AsyncIterator[tuple[str, str]]:
    """The test database owned by a new login role with a password, and a DSN carrying it."""
    role, password = f"sec_{secrets.token_hex(4)}", f"pw-{secrets.token_hex(12)}"
    database = urlsplit(pg_dsn).path.lstrip("/")
    await execute(pg_dsn, f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    await execute(pg_dsn, f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    parts = urlsplit(pg_dsn)
    host = parts.netloc.rpartition("@")[2]
    yield urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}")), password
    await execute(pg_dsn, f'REASSIGN OWNED BY "{role}" TO CURRENT_USER; DROP OWNED BY "{role}"')
    await execute(pg_dsn, f'DROP ROLE "{role}"')


@pytest.fixture
def log_config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "availmon.toml"
    path.write_text(
        '[api]\nport = 0\n[logging]\nlevel = "debug"\nformat = "json"\n'
        "[daemon]\nshutdown_timeout = 2\n[database]\nflush_interval = 0.2\n"
        '[elasticsearch]\nhosts = ["http://elastic:es-secret-4f1d@127.0.0.1:9"]\n'
        "request_timeout = 1\nretry_max = 1\n"
        '[[endpoints]]\nname = "web"\nurl = "http://127.0.0.1:9/"\ncheck_interval = 0.5\n'
        "timeout = 0.2\n"
    )
    yield path


async def test_no_token_or_password_in_logs_or_api_output(
    password_dsn: tuple[str, str], log_config: Path, tmp_path: Path
):
    dsn, password = password_dsn
    secrets_ = [TOKEN, password, "es-secret-4f1d"]
    env = {"AVAILMON_DATABASE__DSN": dsn, "AVAILMON_API__TOKEN": TOKEN}
    running = start_daemon(log_config, tmp_path / "run.log", env)
    answers = []
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, int(running.base.rsplit(":", 1)[1]))
            for body, token in (
                ({"name": "made", "url": "tcp://127.0.0.1:9", **SLOW}, TOKEN),
                ({"name": "bad", "url": "tcp://127.0.0.1:9", "x": 1}, TOKEN),
                ({"name": "nope", "url": "tcp://127.0.0.1:9"}, "wrong"),
            ):
                answers.append(await api.call("POST", "/api/v1/endpoints", body, token=token))
            answers.append(await api.call("POST", "/api/v1/endpoints/1/check"))
            await asyncio.sleep(1.5)  # scheduled checks, Elasticsearch retries
            for method, path, _ in await operations(api):
                if method == "GET":
                    answers.append(await api.call("GET", path.replace("{id}", "1")))
    finally:
        output = running.stop()
    assert answers[0][0] == 201 and answers[2][0] == 401
    assert '"event": "availmon_started"' in output and '"event": "es_sync_started"' in output
    assert "elastic:***@127.0.0.1:9" in output  # the host is logged, without its password
    text = json.dumps(answers)
    for secret in secrets_:
        assert secret not in output
        assert secret not in text
    # DSNs with the password that cannot be used: the error names the server, not the password
    role, database = urlsplit(dsn).username, urlsplit(dsn).path
    for where in ("127.0.0.1:1", "127.0.0.1:notaport", "[::1"):
        bad = f"postgresql://{role}:{password}@{where}{database}"
        log = tmp_path / "bad.log"
        with pytest.raises(AssertionError, match="availmon exited 2:"):
            start_daemon(log_config, log, {**env, "AVAILMON_DATABASE__DSN": bad})
        output = log.read_text()
        assert '"event": "availmon_failed"' in output and f"{role}:***@" in output, output
        assert password not in output
