"""Exactly once after a crash: the real daemon (a subprocess) opens an outage while the
webhook receiver is down, is SIGKILLed, and after a restart the receiver, now up, gets the
event exactly once (by event id)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

import asyncpg

from .test_daemon import db_rows, wait_for
from .test_notify import Receiver, verify

SECRET = "kill-9"


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


def write_config(path: Path, state_dir: Path, target_port: int, hook_port: int) -> None:
    path.write_text(
        f"""
[daemon]
state_dir = "{state_dir}"
shutdown_timeout = 2

[api]
enabled = false

[database]
flush_interval = 0.05

[scheduler]
tick_interval = 0.02

[logging]
level = "info"
format = "json"

[[endpoints]]
name = "gone"
url = "tcp://127.0.0.1:{target_port}"
severity = "critical"
check_interval = 0.3
timeout = 0.2
recheck_interval = 0.1

[notifications]
retry_initial = 0.2
retry_max = 0.3
poll_interval = 0.2

[[notifications.webhook]]
name = "noc"
url = "http://127.0.0.1:{hook_port}/hook/noc"
secret = "{SECRET}"
"""
    )


def start_daemon(config: Path, dsn: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AVAILMON_DATABASE__DSN": dsn}
    return subprocess.Popen(
        [sys.executable, "-m", "availmon", "--config", str(config), "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def test_event_survives_sigkill_and_arrives_exactly_once(pg_dsn: str, tmp_path: Path):
    hook_port, target_port = free_port(), free_port()
    config = tmp_path / "availmon.toml"
    write_config(config, tmp_path / "state", target_port, hook_port)
    log_path = tmp_path / "daemon.log"
    receiver = Receiver()
    with log_path.open("ab") as log:
        first = start_daemon(config, pg_dsn, log)
        try:

            async def failed_attempt() -> bool:
                # the outage row exists, its event is queued and one attempt already failed
                try:
                    rows = await db_rows(
                        pg_dsn,
                        "SELECT d.attempts, d.delivered_at FROM outages o "
                        "JOIN notification_events e ON e.outage_id = o.id "
                        "JOIN notification_deliveries d ON d.event_seq = e.seq",
                    )
                except asyncpg.UndefinedTableError:  # not migrated yet
                    return False
                return bool(rows) and rows[0]["attempts"] >= 1

            await wait_for(failed_attempt, timeout=30)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert first.returncode == -signal.SIGKILL
        (pending,) = await db_rows(
            pg_dsn, "SELECT delivered_at, last_error FROM notification_deliveries"
        )
        assert pending["delivered_at"] is None and "onnect" in pending["last_error"]
        await receiver.start(hook_port)
        second = start_daemon(config, pg_dsn, log)
        try:

            async def delivered() -> bool:
                return bool(receiver.got.get("noc"))

            await wait_for(delivered, timeout=30)
            await asyncio.sleep(1.5)  # several retry and poll periods: no second copy
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
            await receiver.stop()
    assert second.returncode == 0, log_path.read_text()[-3000:]
    (entry,) = receiver.got["noc"]
    event = receiver.events("noc")[0]
    assert event["type"] == "outage.opened"
    assert entry["headers"]["X-Availmon-Event-Id"] == event["id"]
    assert verify(entry, SECRET)
    (row,) = await db_rows(
        pg_dsn,
        "SELECT e.id::text AS id, d.delivered_at, d.attempts FROM notification_events e "
        "JOIN notification_deliveries d ON d.event_seq = e.seq",
    )
    assert row["id"] == event["id"] and row["delivered_at"] is not None and row["attempts"] >= 2
    (outage,) = await db_rows(pg_dsn, "SELECT ended_at FROM outages")
    assert outage["ended_at"] is None  # the restart continued the same outage: no new event
