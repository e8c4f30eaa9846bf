"""Command line: run, migrate, validate, check, setup-elasticsearch, rebuild-redis.

`availmon check` exits like a Nagios plugin: 0 UP, 1 DEGRADED, 2 DOWN, 3 UNKNOWN (bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from availmon.clock import SystemClock
from availmon.config import Settings, config_warnings, load_settings
from availmon.errors import AvailmonError, ConfigError, NotFound, field_errors
from availmon.logs import configure_logging, get_logger
from availmon.model import Endpoint, EndpointSource, Status
from availmon.specs import ENDPOINT_ADAPTER, AnyEndpoint

DEFAULT_CONFIG = "/etc/availmon/config.toml"
EXIT_BY_STATUS = {Status.UP: 0, Status.DEGRADED: 1, Status.DOWN: 2}
EXIT_UNKNOWN = 3
EXIT_CONFIG = 2  # run/migrate/validate: config invalid or storage unusable


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; `availmon check` is a Nagios plugin, where 2 means
    CRITICAL, so its usage errors exit `usage_exit` (3, UNKNOWN) instead."""

    usage_exit = 2
    subcommands: dict[str, _Parser]  # the top level's, by name

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def _parser() -> _Parser:
    config_help = f"config file (default: $AVAILMON_CONFIG or {DEFAULT_CONFIG})"
    common = _Parser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help=config_help)
    parser = _Parser(prog="availmon", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("run", parents=[common], help="run the daemon")
    sub.add_parser("migrate", parents=[common], help="apply pending database migrations")
    sub.add_parser("validate", parents=[common], help="check the config file; exit 0 if valid")
    sub.add_parser(
        "setup-elasticsearch", parents=[common], help="apply the Elasticsearch index template"
    )
    sub.add_parser(
        "rebuild-redis", parents=[common], help="rewrite the Redis status view from PostgreSQL"
    )
    check = sub.add_parser(
        "check", parents=[common], help="check one endpoint now (no database needed)"
    )
    check.usage_exit = EXIT_UNKNOWN
    check.add_argument("target", metavar="NAME_OR_URL")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.add_argument("--timeout", type=float, help="seconds per attempt (URL targets)")
    check.add_argument("--retries", type=int, help="extra attempts (URL targets)")
    check.add_argument("--expect-status", help="status code(s) or class, comma separated")
    check.add_argument("--pattern", help="regex the body (or TCP bytes) must match")
    check.add_argument("--send", help="bytes to send (TCP, UDP)")
    check.add_argument("--send-hex", help="bytes to send, as hex digits (TCP, UDP)")
    check.add_argument("--degraded-ms", type=float, help="degraded above this response time")
    parser.subcommands = sub.choices
    return parser


def _config_path(args: argparse.Namespace) -> tuple[Path, bool]:
    given = getattr(args, "config", None) or os.environ.get("AVAILMON_CONFIG")
    return Path(given or DEFAULT_CONFIG), given is not None


def _load(args: argparse.Namespace) -> Settings:
    path, _ = _config_path(args)
    return load_settings(path)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # left over by the subcommand: its own usage error and exit code (check: 3)
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    handler = {
        "run": _cmd_run,
        "migrate": _cmd_migrate,
        "setup-elasticsearch": _cmd_setup_elasticsearch,
        "rebuild-redis": _cmd_rebuild_redis,
        "validate": _cmd_validate,
        "check": _cmd_check,
    }[args.command]
    return handler(args)


def _report_config_error(exc: ConfigError) -> None:
    sys.stderr.write("config invalid:\n" + "".join(f"  {line}\n" for line in exc.lines))


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        settings = _load(args)
    except ConfigError as exc:
        _report_config_error(exc)
        return EXIT_CONFIG
    path, _ = _config_path(args)
    warnings = config_warnings(settings)
    if warnings:  # valid all the same: exit 0
        sys.stderr.write("".join(f"warning: {path}: {w.field}: {w.message}\n" for w in warnings))
    sys.stdout.write(f"{path}: ok ({len(settings.endpoints)} endpoints)\n")
    return 0


def _configured(args: argparse.Namespace) -> Settings | None:
    """The validated settings with logging configured, or None once the errors are reported."""
    try:
        settings = _load(args)
    except ConfigError as exc:
        _report_config_error(exc)
        return None
    configure_logging(settings.logging.level, settings.logging.format)
    return settings


def run_on_loop(kind: str, main: Coroutine[Any, Any, int]) -> int:
    """Run the daemon on the configured loop; APScheduler, aiohttp and asyncpg run on both."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _cmd_run(args: argparse.Namespace) -> int:
    from availmon.lifecycle import run_daemon

    settings = _configured(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        return run_on_loop(settings.daemon.event_loop, run_daemon(settings, _config_path(args)[0]))
    except AvailmonError as exc:
        get_logger("availmon").error("availmon_failed", error=str(exc))
        return EXIT_CONFIG


def _cmd_migrate(args: argparse.Namespace) -> int:
    from availmon.app import run_migrations

    settings = _configured(args)
    if settings is None:
        return EXIT_CONFIG
    try:
        applied = asyncio.run(run_migrations(settings))
    except AvailmonError as exc:
        get_logger("availmon").error("migrate_failed", error=str(exc))
        return EXIT_CONFIG
    get_logger("availmon").info("migrate_done", applied=applied or [])
    return 0


def _cmd_setup_elasticsearch(args: argparse.Namespace) -> int:
    from availmon.search import setup_elasticsearch
    from availmon.search.bulk import EsUnavailable

    settings = _configured(args)
    if settings is None:
        return EXIT_CONFIG
    logger = get_logger("availmon")
    if not settings.elasticsearch.enabled:
        logger.error("setup_elasticsearch_failed", error="[elasticsearch] hosts is not set")
        return EXIT_CONFIG
    try:
        template = asyncio.run(setup_elasticsearch(settings.elasticsearch))
    except EsUnavailable as exc:
        logger.error("setup_elasticsearch_failed", error=str(exc))
        return EXIT_CONFIG
    logger.info("setup_elasticsearch_done", template=template)
    return 0


def _cmd_rebuild_redis(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    settings = _configured(args)
    if settings is None:
        return EXIT_CONFIG
    logger = get_logger("availmon")
    if not settings.redis.enabled:
        logger.error("rebuild_redis_failed", error="[redis] url is not set")
        return EXIT_CONFIG
    try:
        result = asyncio.run(_rebuild_redis(settings))
    except (AvailmonError, RedisError, OSError, TimeoutError) as exc:
        logger.error("rebuild_redis_failed", error=f"{type(exc).__name__}: {exc}")
        return EXIT_CONFIG
    logger.info(
        "rebuild_redis_done",
        endpoints=result.endpoints,
        with_status=result.with_status,
        open_outages=result.open_outages,
        stale_removed=result.stale_removed,
    )
    return 0


async def _rebuild_redis(settings: Settings) -> Any:
    from availmon.app import open_repository
    from availmon.cache import rebuild_redis_view

    async with open_repository(settings) as repo:
        return await rebuild_redis_view(settings.redis, repo)


def _adhoc_spec(args: argparse.Namespace) -> AnyEndpoint:
    timeout = args.timeout if args.timeout is not None else 10.0
    data: dict[str, Any] = {
        "name": "check",
        "url": args.target,
        "timeout": timeout,
        "check_interval": max(60.0, timeout + 1),
    }
    if args.retries is not None:
        data["retries"] = args.retries
    if args.expect_status:
        data["expected_status_code"] = [s.strip() for s in args.expect_status.split(",")]
    if args.pattern is not None:
        data["expected_pattern"] = args.pattern
    if args.send is not None:
        data["send"] = args.send
    if args.send_hex is not None:
        data["send_hex"] = args.send_hex
    if args.degraded_ms is not None:
        data["degraded_threshold_ms"] = args.degraded_ms
    return ENDPOINT_ADAPTER.validate_python(data)


def _resolve_target(args: argparse.Namespace) -> AnyEndpoint:
    path, explicit = _config_path(args)
    if explicit or path.exists():
        settings = load_settings(path)
        for spec in settings.endpoint_specs:
            if spec.name == args.target:
                return spec
    if "://" not in args.target:
        where = f" in {path}" if explicit or path.exists() else ""
        raise NotFound(
            f"no endpoint named {args.target!r}{where}, and not a URL "
            f"(for a ping: icmp://{args.target})"
        )
    return _adhoc_spec(args)


def _cmd_check(args: argparse.Namespace) -> int:
    # the verdict is the output (and the exit code, for Nagios); the check's own state-change
    # lines would only be noise on stderr. Errors (a probe that crashed) still show.
    configure_logging("error", "logfmt", stream=sys.stderr)
    try:
        spec = _resolve_target(args)
    except ConfigError as exc:
        _report_config_error(exc)
        return EXIT_UNKNOWN
    except NotFound as exc:
        sys.stderr.write(f"invalid target: {exc}\n")
        return EXIT_UNKNOWN
    except ValidationError as exc:
        for problem in field_errors(exc):
            sys.stderr.write(f"invalid target: {problem.field}: {problem.message}\n")
        return EXIT_UNKNOWN
    result = asyncio.run(_check_once(spec))
    if args.json:
        sys.stdout.write(json.dumps({"name": spec.name, "url": spec.url, **result}) + "\n")
    else:
        rt = result["response_time_ms"]
        timing = f" {rt:.1f} ms" if rt is not None else ""
        error = f" - {result['error']}" if result["error"] else ""
        sys.stdout.write(f"{result['status']} {spec.url} ({result['reason']}){timing}{error}\n")
    status = Status(result["status"])
    return EXIT_BY_STATUS.get(status, EXIT_UNKNOWN)


async def _check_once(spec: AnyEndpoint) -> dict[str, Any]:
    from availmon.probes import ProbeContext
    from availmon.runner import Monitor

    context = ProbeContext()
    try:
        monitor = Monitor(clock=SystemClock(), probe_context=context, max_concurrency=1)
        monitor.watch(Endpoint(0, spec, EndpointSource.CONFIG))
        result = await monitor.check(0)
        return result.to_json()
    finally:
        await context.close()


if __name__ == "__main__":
    sys.exit(main())
