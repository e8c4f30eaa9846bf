"""Config loading: every bad-config fixture fails with exactly the message it expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from availmon.config import load_settings
from availmon.errors import ConfigError
from availmon.specs import HttpEndpoint, TcpEndpoint

CONFIGS = Path(__file__).parent / "configs"
ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("invalid-*.toml")), ids=lambda p: p.stem)
def test_invalid_config_names_file_key_and_reason(path: Path):
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.lines == [f"{path}: {expected}"]


def test_example_config_parses_and_uses_every_protocol(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AVAILMON_DAEMON__STATE_DIR", raising=False)
    settings = load_settings(ROOT / "config.example.toml")
    names = [e.name for e in settings.endpoint_specs]
    assert len(names) == len(set(names)) >= 3
    kinds = {type(e) for e in settings.endpoint_specs}
    assert kinds == {HttpEndpoint, TcpEndpoint}
    assert settings.api.host == "127.0.0.1"
    assert settings.daemon.state_dir == (ROOT / ".state").resolve()


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "c.toml"
    path.write_text("[database]\npool_size = 3\n[api]\nport = 9000\n")
    monkeypatch.setenv("AVAILMON_DATABASE__DSN", "postgresql://u:pw@127.0.0.1/x")
    monkeypatch.setenv("AVAILMON_API__PORT", "9100")
    settings = load_settings(path)
    assert settings.database.pool_size == 3
    assert settings.api.port == 9100
    assert settings.database.dsn is not None
    assert settings.database.dsn.get_secret_value() == "postgresql://u:pw@127.0.0.1/x"
    assert "pw" not in repr(settings)


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "c.toml"
    path.write_text("")
    monkeypatch.setenv("AVAILMON_API__PORT", "eighty")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (line,) = info.value.lines
    assert line.startswith(f"{path}: api.port: Input should be a valid integer")
    assert line.endswith("(value from environment variable AVAILMON_API__PORT)")


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.toml")
    assert info.value.lines == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_several_problems_are_all_reported(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[[endpoints]]\nname = "a"\nurl = "tcp://h:1"\nsend = 5\nretries = -1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    fields = sorted(line.split(": ")[1] for line in info.value.lines)
    assert fields == ["endpoints[0].retries", "endpoints[0].send"]


def test_endpoint_defaults_follow_the_data_model(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[[endpoints]]\nname = "a"\nurl = "https://h/"\ncheck_interval = 30\ntimeout = 5\n'
    )
    (spec,) = load_settings(path).endpoint_specs
    assert isinstance(spec, HttpEndpoint)
    assert spec.protocol.value == "https"
    assert (spec.failure_threshold, spec.recovery_threshold) == (3, 2)
    assert spec.effective_recheck_interval == 10
    assert spec.expected_status_code == ["2xx"]
    assert spec.status_code_ok(204) and not spec.status_code_ok(301)
