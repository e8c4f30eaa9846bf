"""`make install DESTDIR=...` lays down the venv, the unit and the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


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
    assert script.read_text().splitlines()[0] == "#!/opt/availmon/bin/python"
    # the installed package is importable by the venv's own interpreter (run in place)
    python = dest / "opt/availmon/bin/python"
    proc = subprocess.run(
        [str(python), "-c", "import availmon.cli, availmon.store"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
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
