"""Log lines: one event per line, journald priority prefix, secrets redacted."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from availmon.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


def test_logfmt_one_line_per_event_with_journald_priority(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    configure_logging("info", "logfmt", stream=out)
    log = get_logger("t").bind(endpoint_id=7, endpoint_name="web portal")
    log.warning("status_changed", status="DOWN")
    log.info("check_done", status="UP")
    log.debug("hidden")
    log.error("oops", token="abc", dsn="postgresql://u:pw@h/db")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("<4>timestamp=")
    assert "level=warning event=status_changed" in lines[0]
    assert 'endpoint_id=7 endpoint_name="web portal" status=DOWN' in lines[0]
    assert lines[1].startswith("<6>") and lines[2].startswith("<3>")
    assert "pw" not in lines[2] and "abc" not in lines[2]


def test_json_format_without_journald(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    get_logger("t").debug("check_done", endpoint_id=1, endpoint_name="a", response_time_ms=None)
    (line,) = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "check_done" and event["level"] == "debug"
    assert event["endpoint_id"] == 1 and event["response_time_ms"] is None
