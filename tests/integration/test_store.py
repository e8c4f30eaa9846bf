"""Repository and migrations against a real PostgreSQL (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from availmon.errors import Conflict, NotFound, StorageError
from availmon.model import EndpointSource, Reason, Severity, Status, StatusRow
from availmon.specs import ENDPOINT_ADAPTER, AnyEndpoint
from availmon.store import Repository, apply_migrations, dsn_with_database, redact_dsn

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def spec(name: str, **fields: Any) -> AnyEndpoint:
    return ENDPOINT_ADAPTER.validate_python({"name": name, "url": "https://example.com/", **fields})


def status(endpoint_id: int, at: datetime, **fields: Any) -> StatusRow:
    values: dict[str, Any] = {
        "status": Status.UP,
        "reason": Reason.OK,
        "response_time_ms": 12.5,
        "error": None,
        "attempts": 1,
        "details": {"http_status": 200},
    }
    values.update(fields)
    return StatusRow(endpoint_id=endpoint_id, checked_at=at, **values)


ROOT = Path(__file__).parents[2]


# -- migrations ---------------------------------------------------------------------------------


async def test_migrations_apply_once_then_nothing(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        every = [path.stem for path in sorted((ROOT / "sql").glob("[0-9]*.sql"))]
        assert every[:2] == ["0001_init", "0002_endpoint_state"]
        assert await apply_migrations(conn) == every
        assert await apply_migrations(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(every)
        kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'statuses'")
        assert kind == "p"  # partitioned table
    finally:
        await conn.close()


async def test_concurrent_migrations_do_not_race(pg_dsn: str) -> None:
    conns = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        every = [path.stem for path in sorted((ROOT / "sql").glob("[0-9]*.sql"))]
        assert sorted(results) == [[], [], every]
    finally:
        for conn in conns:
            await conn.close()


async def test_migrations_stop_at_a_broken_file(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("CREATE TABLE one (id int);")
    (tmp_path / "0002_two.sql").write_text("CREATE TABLE two (id int); INSERT INTO two VALUES (2);")
    (tmp_path / "0003_broken.sql").write_text("CREATE TABLE three (id int); SELEC 1;")
    (tmp_path / "notes.txt").write_text("not a migration")
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(StorageError, match=r"0003_broken\.sql"):
            await apply_migrations(conn, tmp_path)
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r["version"] for r in versions] == ["0001_one", "0002_two"]
        # the broken file ran in its own transaction: nothing of it is left behind
        assert await conn.fetchval("SELECT to_regclass('three')") is None
        (tmp_path / "0003_broken.sql").write_text("CREATE TABLE three (id int);")
        assert await apply_migrations(conn, tmp_path) == ["0003_broken"]
    finally:
        await conn.close()


async def test_duplicate_migration_versions_are_refused(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(StorageError, match="share number 0001"):
            await apply_migrations(conn, tmp_path)
    finally:
        await conn.close()


async def test_connect_to_missing_database_is_a_storage_error(pg_server_dsn: str) -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        await Repository.connect(dsn_with_database(pg_server_dsn, "no_such_db_here"), 1)


def test_redact_dsn_hides_the_password() -> None:
    assert redact_dsn("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_dsn("postgresql://u@/db?host=/run") == "postgresql://u@/db?host=/run"


# -- endpoints ----------------------------------------------------------------------------------


async def test_sync_creates_updates_and_deactivates(repo: Repository) -> None:
    first = await repo.sync_config_endpoints([spec("a"), spec("b", tags=["x"])])
    assert [(e.name, e.source) for e in first] == [
        ("a", EndpointSource.CONFIG),
        ("b", EndpointSource.CONFIG),
    ]
    ids = {e.name: e.id for e in first}

    second = await repo.sync_config_endpoints([spec("a", timeout=3), spec("c")])
    by_name = {e.name: e for e in second}
    assert by_name["a"].id == ids["a"] and by_name["a"].spec.timeout == 3
    assert by_name["b"].id == ids["b"] and by_name["b"].spec.is_active is False
    assert by_name["c"].spec.is_active is True
    active = await repo.list_endpoints(include_inactive=False)
    assert sorted(e.name for e in active) == ["a", "c"]
    column = await repo.pool.fetchval("SELECT is_active FROM endpoints WHERE name = 'b'")
    assert column is False

    # back in the config: the same endpoint (same id, same history) is active again
    third = await repo.sync_config_endpoints([spec("a", timeout=3), spec("b", tags=["x"])])
    assert {e.name: e.spec.is_active for e in third} == {"a": True, "b": True, "c": False}
    assert next(e for e in third if e.name == "b").id == ids["b"]


async def test_sync_unchanged_spec_does_not_touch_the_row(repo: Repository) -> None:
    await repo.sync_config_endpoints([spec("a")])
    before = await repo.pool.fetchval("SELECT updated_at FROM endpoints WHERE name = 'a'")
    await repo.sync_config_endpoints([spec("a")])
    after = await repo.pool.fetchval("SELECT updated_at FROM endpoints WHERE name = 'a'")
    assert before == after


async def test_sync_refuses_to_take_over_an_api_endpoint(repo: Repository) -> None:
    await repo.create_endpoint(spec("shared"), EndpointSource.API)
    with pytest.raises(Conflict, match="'shared'"):
        await repo.sync_config_endpoints([spec("shared"), spec("other")])
    # the failed sync changed nothing
    assert [e.name for e in await repo.list_endpoints()] == ["shared"]


async def test_create_duplicate_name_is_a_conflict_naming_the_field(repo: Repository) -> None:
    created = await repo.create_endpoint(spec("api-1", protocol="https"))
    assert created.source is EndpointSource.API
    assert created.spec == spec("api-1")
    with pytest.raises(Conflict, match=r"^name: .*'api-1'"):
        await repo.create_endpoint(spec("api-1"))


async def test_get_update_and_not_found(repo: Repository) -> None:
    one = await repo.create_endpoint(spec("one"))
    two = await repo.create_endpoint(spec("two"))
    assert await repo.get_endpoint(one.id) == one
    assert await repo.get_endpoint_by_name("two") == two
    assert await repo.get_endpoint_by_name("nope") is None
    updated = await repo.update_endpoint(one.id, spec("one-renamed", is_active=False))
    assert updated.name == "one-renamed" and updated.source is EndpointSource.API
    row = await repo.pool.fetchrow("SELECT name, is_active FROM endpoints WHERE id = $1", one.id)
    assert tuple(row) == ("one-renamed", False)
    with pytest.raises(Conflict, match="name"):
        await repo.update_endpoint(one.id, spec("two"))
    with pytest.raises(NotFound):
        await repo.get_endpoint(10_000)
    with pytest.raises(NotFound):
        await repo.update_endpoint(10_000, spec("x"))


async def test_soft_delete_keeps_history_and_frees_the_name(repo: Repository) -> None:
    endpoint = await repo.create_endpoint(spec("gone"))
    await repo.write_statuses([status(endpoint.id, T0), status(endpoint.id, T0 + timedelta(1))])
    await repo.delete_endpoint(endpoint.id)
    with pytest.raises(NotFound):
        await repo.get_endpoint(endpoint.id)
    with pytest.raises(NotFound):
        await repo.delete_endpoint(endpoint.id)
    assert await repo.list_endpoints() == []
    assert len(await repo.list_statuses(endpoint.id)) == 2
    again = await repo.create_endpoint(spec("gone"))
    assert again.id != endpoint.id
    deleted = await repo.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM endpoints WHERE id = $1", endpoint.id
    )
    assert deleted is True


# -- statuses -----------------------------------------------------------------------------------


async def test_write_and_page_through_statuses(repo: Repository) -> None:
    rows = [status(1, T0 + timedelta(minutes=i), attempts=i + 1) for i in range(25)]
    rows += [status(2, T0 + timedelta(minutes=i)) for i in range(5)]
    await repo.write_statuses(rows)

    page1 = await repo.list_statuses(1, limit=10)
    assert [r.attempts for r in page1] == list(range(25, 15, -1))  # newest first
    page2 = await repo.list_statuses(1, limit=10, before=page1[-1].checked_at)
    page3 = await repo.list_statuses(1, limit=10, before=page2[-1].checked_at)
    assert [r.attempts for r in page2 + page3] == list(range(15, 0, -1))
    assert page1[0] == rows[24]

    window = await repo.list_statuses(
        1, since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=9), limit=100
    )
    assert [r.attempts for r in window] == [10, 9, 8, 7, 6]  # both ends included


async def test_partitions_are_created_on_demand(repo: Repository) -> None:
    old = datetime(2001, 2, 3, 23, 59, 59, tzinfo=UTC)
    future = datetime(2099, 12, 31, 0, 0, tzinfo=UTC)
    # 2099-12-31 01:30+02:00 is still 2099-12-30 in UTC: partitions follow UTC days
    local = datetime(2099, 12, 31, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    await repo.write_statuses([status(1, old), status(1, future), status(2, local)])
    names = await repo.pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'statuses'::regclass ORDER BY 1"
    )
    assert [n["relname"] for n in names] == [
        "statuses_20010203",
        "statuses_20991230",
        "statuses_20991231",
    ]
    assert len(await repo.list_statuses(1)) == 2

    assert await repo.ensure_partitions(date(2099, 12, 30), 2) == ["statuses_21000101"]
    assert await repo.ensure_partitions(date(2099, 12, 30), 2) == []
    assert await repo.drop_partitions_before(date(2099, 1, 1)) == ["statuses_20010203"]
    assert len(await repo.list_statuses(1)) == 1


async def test_values_round_trip_and_null_response_time_stays_null(repo: Repository) -> None:
    down = status(
        7,
        T0,
        status=Status.DOWN,
        reason=Reason.TIMEOUT,
        response_time_ms=None,
        error="timed out after 10 s",
        attempts=3,
        details={"phase": "connect", "nested": {"n": [1, 2]}, "when": T0},
    )
    await repo.write_statuses([down, status(7, T0 + timedelta(seconds=1), response_time_ms=123.4)])
    newest, oldest = await repo.list_statuses(7)
    assert newest.response_time_ms == 123.4
    assert oldest.response_time_ms is None
    assert (
        await repo.pool.fetchval("SELECT count(*) FROM statuses WHERE response_time_ms IS NULL")
        == 1
    )
    assert oldest.status is Status.DOWN and oldest.reason is Reason.TIMEOUT
    assert oldest.error == "timed out after 10 s" and oldest.attempts == 3
    # a non-JSON value in details is stored as text rather than failing the batch
    assert oldest.details == {"phase": "connect", "nested": {"n": [1, 2]}, "when": str(T0)}


async def test_writing_a_batch_twice_is_harmless(repo: Repository) -> None:
    rows = [status(1, T0 + timedelta(seconds=i)) for i in range(10)]
    await repo.write_statuses(rows[:6])
    await repo.write_statuses(rows)  # overlaps: COPY fails, the idempotent insert takes over
    assert await repo.pool.fetchval("SELECT count(*) FROM statuses") == 10


async def test_recent_statuses_per_endpoint(repo: Repository) -> None:
    rows = [status(e, T0 + timedelta(seconds=10 * i + e)) for e in (1, 2) for i in range(5)]
    await repo.write_statuses(rows)
    recent = await repo.recent_statuses([1, 2, 3], per_endpoint=3)
    assert set(recent) == {1, 2, 3}
    assert recent[3] == []
    for endpoint_id in (1, 2):
        got = recent[endpoint_id]
        assert [r.endpoint_id for r in got] == [endpoint_id] * 3
        assert [r.checked_at for r in got] == [
            T0 + timedelta(seconds=10 * i + endpoint_id) for i in (4, 3, 2)
        ]


async def test_latest_statuses_covers_live_endpoints(repo: Repository) -> None:
    a = await repo.create_endpoint(spec("a"))
    b = await repo.create_endpoint(spec("b"))
    c = await repo.create_endpoint(spec("c"))
    await repo.write_statuses(
        [status(a.id, T0), status(a.id, T0 + timedelta(1), status=Status.DOWN), status(b.id, T0)]
    )
    await repo.delete_endpoint(b.id)
    latest = await repo.latest_statuses()
    assert set(latest) == {a.id}
    assert latest[a.id].status is Status.DOWN
    assert c.id not in latest


async def test_status_changes_are_remembered_per_endpoint(repo: Repository) -> None:
    a = await repo.create_endpoint(spec("a"))
    b = await repo.create_endpoint(spec("b"))
    await repo.create_endpoint(spec("never-checked"))
    await repo.record_status_change(a.id, Status.UP, T0)
    await repo.record_status_change(b.id, Status.UP, T0)
    await repo.record_status_change(a.id, Status.DOWN, T0 + timedelta(minutes=4))
    assert await repo.status_since() == {
        a.id: (Status.DOWN, T0 + timedelta(minutes=4)),
        b.id: (Status.UP, T0),
    }


async def test_ensure_partitions_for_today(repo: Repository) -> None:
    created = await repo.ensure_partitions_for_today(days_ahead=2, today=date(2030, 5, 31))
    assert created == [
        "statuses_20300530",
        "statuses_20300531",
        "statuses_20300601",
        "statuses_20300602",
    ]


# -- outages ------------------------------------------------------------------------------------


async def test_open_outage_twice_returns_the_same_outage(repo: Repository) -> None:
    e = await repo.create_endpoint(spec("flaky"))
    first = await repo.open_outage(
        e.id, Severity.HIGH, T0, T0 + timedelta(minutes=2), "timeout", "t/o"
    )
    again = await repo.open_outage(
        e.id, Severity.LOW, T0 + timedelta(minutes=5), T0, "refused", None
    )
    assert again == first
    assert (first.reason, first.error, first.ended_at) == ("timeout", "t/o", None)
    assert await repo.pool.fetchval("SELECT count(*) FROM outages") == 1

    await repo.close_outage(first.id, T0 + timedelta(minutes=10))
    await repo.close_outage(first.id, T0 + timedelta(minutes=20))  # already closed: no change
    closed = await repo.get_outage(first.id)
    assert closed.ended_at == T0 + timedelta(minutes=10)
    later = await repo.open_outage(
        e.id, Severity.HIGH, T0 + timedelta(hours=1), T0 + timedelta(hours=1)
    )
    assert later.id != first.id and later.ended_at is None


async def test_concurrent_open_outage_yields_one(repo: Repository) -> None:
    e = await repo.create_endpoint(spec("racy"))
    results = await asyncio.gather(
        *(repo.open_outage(e.id, Severity.HIGH, T0, T0) for _ in range(8))
    )
    assert len({o.id for o in results}) == 1


async def test_index_forbids_two_open_outages(repo: Repository) -> None:
    e = await repo.create_endpoint(spec("strict"))
    await repo.open_outage(e.id, Severity.HIGH, T0, T0)
    insert = (
        "INSERT INTO outages (endpoint_id, severity, started_at, opened_at) "
        "VALUES ($1, 'high', $2, $2)"
    )
    with pytest.raises(asyncpg.UniqueViolationError, match="outages_one_open_per_endpoint"):
        await repo.pool.execute(insert, e.id, T0 + timedelta(hours=1))
    # a closed one beside the open one is fine
    await repo.pool.execute(
        "INSERT INTO outages (endpoint_id, severity, started_at, opened_at, ended_at) "
        "VALUES ($1, 'low', $2, $2, $2)",
        e.id,
        T0 - timedelta(days=1),
    )


async def test_outage_not_found_cases(repo: Repository) -> None:
    with pytest.raises(NotFound):
        await repo.get_outage(1)
    with pytest.raises(NotFound):
        await repo.close_outage(1, T0)
    with pytest.raises(NotFound):
        await repo.update_outage_severity(1, Severity.LOW)
    with pytest.raises(NotFound, match="endpoint 4242"):
        await repo.open_outage(4242, Severity.HIGH, T0, T0)


async def test_list_outages_filters_and_pages(repo: Repository) -> None:
    a = await repo.create_endpoint(spec("a"))
    b = await repo.create_endpoint(spec("b"))
    old = await repo.open_outage(a.id, Severity.LOW, T0, T0)
    await repo.close_outage(old.id, T0 + timedelta(hours=1))
    open_a = await repo.open_outage(
        a.id, Severity.HIGH, T0 + timedelta(hours=2), T0 + timedelta(hours=2)
    )
    open_b = await repo.open_outage(
        b.id, Severity.CRITICAL, T0 + timedelta(hours=3), T0 + timedelta(hours=3)
    )

    assert [o.id for o in await repo.list_outages()] == [open_b.id, open_a.id, old.id]
    assert [o.id for o in await repo.list_outages(active=True)] == [open_b.id, open_a.id]
    assert [o.id for o in await repo.list_outages(active=False)] == [old.id]
    assert [o.id for o in await repo.list_outages(endpoint_id=a.id)] == [open_a.id, old.id]
    assert [o.id for o in await repo.list_outages(severity="critical")] == [open_b.id]
    assert [o.id for o in await repo.list_outages(limit=1, offset=1)] == [open_a.id]
    assert [o.id for o in await repo.open_outages()] == [open_a.id, open_b.id]

    await repo.update_outage_severity(open_a.id, Severity.MEDIUM)
    assert (await repo.get_outage(open_a.id)).severity is Severity.MEDIUM
    assert (await repo.get_outage(open_a.id)).to_json()["is_active"] is True
