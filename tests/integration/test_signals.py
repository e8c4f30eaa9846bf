"""The real `availmon run` process: SIGTERM, SIGHUP, SIGKILL, and systemd notifications."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from availmon.store import EmbeddedPostgres
from tests.loopback import serve

ROOT = Path(__file__).parents[2]
INTERVAL = 0.3


class Counter:
    """An HTTP target that counts the checks it answers, per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.runner, self.port = await serve(app)


@pytest.fixture
async def counter() -> AsyncIterator[Counter]:
    c = Counter()
    await c.start()
    yield c
    assert c.runner is not None
    await c.runner.cleanup()


def write_config(path: Path, port: int, names: list[str], extra: str = "") -> None:
    body = "[api]\nport = 0\n[database]\nflush_interval = 0.2\n[scheduler]\ntick_interval = 0.05\n"
    body += "[daemon]\nshutdown_timeout = 3\n" + extra
    for name in names:
        body += (
            f'[[endpoints]]\nname = "{name}"\nurl = "http://127.0.0.1:{port}/{name}"\n'
            f"check_interval = {INTERVAL}\ntimeout = 0.2\n"
        )
    path.write_text(body)


class Daemon:
    def __init__(self, config: Path, dsn: str, notify: Path) -> None:
        self.config, self.dsn, self.notify = config, dsn, notify
        self.proc: asyncio.subprocess.Process | None = None
        self.output = b""

    async def start(self) -> None:
        env = {
            **os.environ,
            "AVAILMON_DATABASE__DSN": self.dsn,
            "NOTIFY_SOCKET": str(self.notify),
            "WATCHDOG_USEC": "200000",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "availmon", "--config", str(self.config), "run",
            env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        self.output += out
        assert self.proc.returncode is not None
        return self.proc.returncode


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")

    async def keep_draining() -> None:
        # a unix datagram queue holds only ~10 messages: read them as they come
        while True:
            sock.drain()
            await asyncio.sleep(0.02)

    task = asyncio.create_task(keep_draining())
    yield sock
    task.cancel()
    sock.close()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def stored(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT e.name, count(s.*) AS n FROM endpoints e "
            "LEFT JOIN statuses s ON s.endpoint_id = e.id GROUP BY e.name"
        )
        return {r["name"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_sigterm_flushes_every_result_and_exits_0(
    pg_dsn: str, counter: Counter, tmp_path: Path, notify: NotifySocket, event_loop: str
):
    config = tmp_path / "c.toml"
    write_config(config, counter.port, ["a", "b"], extra=f'event_loop = "{event_loop}"\n')
    daemon = Daemon(config, pg_dsn, tmp_path / "notify")
    await daemon.start()

    async def ready() -> bool:
        return any(m.startswith("READY=1") for m in notify.drain())

    await wait_for(ready)
    ready_msg = next(m for m in notify.messages if m.startswith("READY=1"))
    assert "STATUS=2 endpoints" in ready_msg

    async def some_checks() -> bool:
        return sum(counter.hits.values()) >= 10

    await wait_for(some_checks)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait(15) == 0, daemon.output.decode()
    assert time.monotonic() - started < 6  # shutdown_timeout 3 s + flush + database stop
    notify.drain()
    assert sum(m == "WATCHDOG=1" for m in notify.messages) >= 2
    assert any(m.startswith("STOPPING=1") for m in notify.messages)
    # every check the targets answered has its result in PostgreSQL
    assert await stored(pg_dsn) == {"a": counter.hits["/a"], "b": counter.hits["/b"]}
    assert b"event=availmon_stopped" in daemon.output
    assert f"event_loop={event_loop}".encode() in daemon.output


async def test_sighup_applies_a_valid_config_and_keeps_running_on_a_bad_one(
    pg_dsn: str, counter: Counter, tmp_path: Path, notify: NotifySocket
):
    config = tmp_path / "c.toml"
    write_config(config, counter.port, ["a", "b"])
    daemon = Daemon(config, pg_dsn, tmp_path / "notify")
    await daemon.start()

    async def hit(path: str, n: int = 1) -> bool:
        return counter.hits.get(path, 0) >= n

    await wait_for(lambda: hit("/b", 2))
    write_config(config, counter.port, ["a", "c"])  # b removed, c added, a unchanged
    daemon.signal(signal.SIGHUP)
    await wait_for(lambda: hit("/c", 3))
    b_after = counter.hits["/b"]
    a_before = counter.hits["/a"]
    await asyncio.sleep(4 * INTERVAL)
    assert counter.hits["/b"] <= b_after + 1  # at most one check in flight at the reload
    assert counter.hits["/a"] >= a_before + 3  # unchanged endpoint kept running
    config.write_text(config.read_text() + '[[endpoints]]\nname = "a"\nurl = "ftp://x"\n')
    daemon.signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    c_now = counter.hits["/c"]
    await wait_for(lambda: hit("/c", c_now + 3))  # still running the previous config
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait(15) == 0
    out = daemon.output.decode()
    assert "event=config_reloaded added=1 changed=0 removed=1 unchanged=1" in out
    assert "event=reload_rejected" in out and "key=endpoints[2]" in out
    notify.drain()
    assert any(m.startswith("RELOADING=1") for m in notify.messages)


async def test_sigkill_while_postgres_is_down_loses_at_most_one_flush_interval(
    pg_state_dir: Path, counter: Counter, tmp_path: Path, notify: NotifySocket
):
    server = EmbeddedPostgres(pg_state_dir, durable=False)
    dsn = await server.start()
    config = tmp_path / "c.toml"
    write_config(config, counter.port, ["a"])
    try:
        daemon = Daemon(config, dsn, tmp_path / "notify")
        await daemon.start()

        async def ready() -> bool:
            return any(m.startswith("READY=1") for m in notify.drain())

        await wait_for(ready)
        await asyncio.sleep(1.0)
        await server.stop()  # PostgreSQL goes away under the daemon
        await asyncio.sleep(2.0)
        daemon.signal(signal.SIGKILL)
        await daemon.wait(10)
        produced = counter.hits["/a"]
        await server.start()
        notify.messages.clear()
        second = Daemon(config, dsn, tmp_path / "notify")
        await second.start()
        await wait_for(ready)
        second.signal(signal.SIGTERM)
        assert await second.wait(15) == 0
        out = second.output.decode()
        assert "event=spool_found" in out and "event=spool_replayed" in out
        total = (await stored(dsn))["a"]
        after_restart = counter.hits["/a"] - produced
        lost = produced + after_restart - total
        # one flush interval (0.2 s) holds at most one result at a 0.3 s interval, plus the
        # check that was in flight when the process died
        assert 0 <= lost <= 2, (produced, after_restart, total)
    finally:
        await server.stop()
