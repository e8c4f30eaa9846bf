"""The real `availmon` command in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

ROOT = Path(__file__).parents[2]


async def availmon(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "availmon",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello availmon")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="slow")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_check_exit_codes_follow_nagios(server: str, tmp_path: Path):
    code, out, _ = await availmon("check", f"{server}/ok", "--json", "--pattern", "hello")
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "UP" and result["reason"] == "ok" and result["error"] is None
    assert result["response_time_ms"] > 0 and result["details"]["status_code"] == 200

    code, out, _ = await availmon("check", f"{server}/slow", "--json", "--degraded-ms", "100")
    assert code == 1 and json.loads(out)["status"] == "DEGRADED"

    code, out, _ = await availmon("check", f"{server}/fail", "--json")
    result = json.loads(out)
    assert code == 2 and result["status"] == "DOWN" and result["reason"] == "unexpected_status"

    code, out, _ = await availmon("check", "tcp://127.0.0.1:9", "--json", "--timeout", "1")
    result = json.loads(out)
    assert code == 2 and result["reason"] == "refused" and result["response_time_ms"] is None

    code, out, err = await availmon("check", "ftp://127.0.0.1/")
    assert code == 3 and "protocol must be one of" in err and out == ""

    code, _, err = await availmon(
        "check", "no-such-endpoint", "--config", str(ROOT / "config.example.toml")
    )
    assert code == 3 and "no endpoint named 'no-such-endpoint'" in err


async def test_check_by_name_from_config(server: str, tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[endpoints]]\nname = "svc"\nurl = "{server}/ok"\nexpected_pattern = "nope"\n'
    )
    code, out, _ = await availmon("check", "svc", "--config", str(config))
    assert code == 2
    assert out.startswith(f"DOWN {server}/ok (pattern_mismatch)")


async def test_validate_lists_errors_and_exits_nonzero(tmp_path: Path):
    code, out, err = await availmon("validate", "--config", str(ROOT / "config.example.toml"))
    assert code == 0 and "ok (4 endpoints)" in out and "warning" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text('[api]\nport = "x"\nfoo = 1\n')
    code, _, err = await availmon("--config", str(bad), "validate")
    assert code == 2
    assert f"{bad}: api.port: Input should be a valid integer" in err
    assert f"{bad}: api.foo: unknown key" in err


async def test_validate_warns_of_checks_that_can_outlast_their_interval(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[[endpoints]]\nname = "fits"\nurl = "tcp://127.0.0.1:9"\ncheck_interval = 10.0\n'
        "timeout = 4.0\nretries = 1\n"
        '[[endpoints]]\nname = "overruns"\nurl = "tcp://127.0.0.1:9"\ncheck_interval = 10.0\n'
        "timeout = 4.0\nretries = 2\n"
        '[[endpoints]]\nname = "off"\nurl = "tcp://127.0.0.1:9"\ncheck_interval = 10.0\n'
        "timeout = 4.0\nretries = 2\nis_active = false\n"  # never checked: not warned of
    )
    code, out, err = await availmon("validate", "--config", str(config))
    assert code == 0 and "ok (3 endpoints)" in out  # valid: a warning, not an error
    assert err == (
        f"warning: {config}: endpoints[1].retries: timeout (4 s) x (retries 2 + 1) = 12 s is"
        " not less than check_interval (10 s): a check whose attempts time out runs past its"
        " next slot, which is skipped\n"
    )


async def test_migrate_applies_and_is_idempotent(pg_dsn: str, tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("")
    env = {"AVAILMON_DATABASE__DSN": pg_dsn}
    code, out, err = await availmon("migrate", "--config", str(config), env=env)
    assert code == 0, err
    assert "migrate_done" in out and "0001_init" in out
    code, out, _ = await availmon("migrate", "--config", str(config), env=env)
    assert code == 0 and "applied=[]" in out
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert "0001_init" in versions[0]


async def test_run_exits_2_with_the_reason_when_the_api_address_is_taken(
    pg_dsn: str, tmp_path: Path
):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n[database]\ndsn = "{pg_dsn}"\n'
        f'[api]\nhost = "127.0.0.1"\nport = {port}\n'
    )
    try:
        code, out, err = await availmon("--config", str(config), "run")
    finally:
        taken.close()
    assert code == 2, out + err
    assert "availmon_failed" in out
    assert f"api: cannot listen on 127.0.0.1:{port}: address already in use" in out.lower()
    assert "Traceback" not in out + err


async def test_check_usage_errors_and_unknown_names_exit_3_unknown(tmp_path: Path):
    code, _, err = await availmon("check", "http://127.0.0.1:9/", "--timeout", "abc")
    assert code == 3 and "argument --timeout: invalid float value: 'abc'" in err
    code, _, err = await availmon("check", "http://127.0.0.1:9/", "--bogus")  # after the name
    assert code == 3 and "unrecognized arguments: --bogus" in err
    code, _, err = await availmon("validate", "--bogus")  # other commands: argparse's 2
    assert code == 2 and "unrecognized arguments: --bogus" in err
    config = tmp_path / "c.toml"
    config.write_text("")
    code, _, err = await availmon("--config", str(config), "check", "nosuch")
    assert code == 3
    assert err == (
        f"invalid target: no endpoint named 'nosuch' in {config}, and not a URL "
        "(for a ping: icmp://nosuch)\n"
    )


async def test_an_unknown_section_in_an_environment_variable_is_an_error(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("")
    code, _, err = await availmon(
        "--config", str(config), "validate", env={"AVAILMON_APII__PORT": "1"}
    )
    assert code == 2
    assert f"{config}: AVAILMON_APII__PORT: unknown section 'apii'" in err
