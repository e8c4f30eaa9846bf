"""`make install DESTDIR=...` lays down the venv, the unit and the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(600)  # builds a venv and installs every dependency into it
def test_make_install_into_destdir(tmp_path: Path):
    dest = tmp_path / "root"
    proc = subprocess.run(
        [
            "make",
            "-s",
            "install",
            f"DESTDIR={dest}",
            "PREFIX=/opt/availmon",
            f"PYTHON={sys.executable}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    unit = (dest / "etc/systemd/system/availmon.service").read_text()
    assert "ExecStart=/opt/availmon/bin/availmon --config /etc/availmon/config.toml run" in unit
    for line in (
        "User=availmon",
        "StateDirectory=availmon",
        "Restart=on-failure",
        "AmbientCapabilities=CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ):
        assert line in unit.splitlines(), line
    config = dest / "etc/availmon/config.toml"
    assert config.read_text() == (ROOT / "config.example.toml").read_text()
    script = dest / "opt/availmon/bin/availmon"
    assert script.read_text().splitlines()[0].startswith("#!/opt/availmon/bin/python")
    # the installed package is importable by the venv's own interpreter (run in place), every
    # subpackage of it (availmon.app imports them all: one left out of pyproject fails here)
    python = dest / "opt/availmon/bin/python"
    probe = (
        "import availmon.cli, availmon.app; from availmon.store.migrations import default_sql_dir; "
        "d = default_sql_dir(); print(d, sorted(p.name for p in d.iterdir()))"
    )
    proc = subprocess.run(
        [str(python), "-c", probe],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # the migrations ship inside the installed package, not read from this checkout
    assert str(dest / "opt/availmon/lib") in proc.stdout
    assert "0001_init.sql" in proc.stdout and "0002_endpoint_state.sql" in proc.stdout
    # so do the status page's templates and static files: the installed app renders the page
    page = (
        "import asyncio, availmon.web as w; from aiohttp import web; "
        "app = web.Application(); w.add_web_routes(app); "
        "print(w.__file__, sorted(p.name for p in w.STATIC_DIR.iterdir())); "
        "env = app[w.page.TEMPLATES]; print(env.get_template('login.html').render("
        "viewer=None, now=None, next_path='/', failed=False)[:15])"
    )
    proc = subprocess.run(
        [str(python), "-c", page],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(dest / "opt/availmon/lib") in proc.stdout
    assert "['page.js', 'style.css']" in proc.stdout and "<!doctype html>" in proc.stdout
    # an existing config is kept
    config.write_text("# mine\n")
    proc = subprocess.run(
        ["make", "-s", "install", f"DESTDIR={dest}", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert config.read_text() == "# mine\n"
    assert "kept existing" in proc.stdout
