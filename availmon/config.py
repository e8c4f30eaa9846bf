"""Typed configuration: a TOML file, overridden by AVAILMON_SECTION__KEY environment variables.

Every model forbids unknown keys, so a typo is an error at load time, not a silent default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import tomli  # tomllib's own parser, compiled with mypyc: 2.5x faster at 10,000 endpoints
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from availmon.errors import ConfigError, FieldError, field_errors, key_path
from availmon.maintenance import MaintenanceConfig
from availmon.notify.config import NotificationSettings
from availmon.specs import AnyEndpoint, EndpointSpec, host_problem


class Section(BaseModel):
    # no NaN or infinity: a NaN fails every bound and was reported as out of range
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DaemonSettings(Section):
    state_dir: Path = Field(
        default=Path("/var/lib/availmon"),
        description="Holds the embedded PostgreSQL cluster; relative paths are taken from the "
        "config file's folder",
    )
    shutdown_timeout: float = Field(default=10.0, gt=0, le=300)
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The event loop `availmon run` uses: uvloop (measured cheaper per check, "
        "see README Performance) or the standard library's asyncio loop",
    )


class DatabaseSettings(Section):
    dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL DSN; empty means the embedded server in state_dir"
    )
    pool_size: int = Field(default=5, ge=1, le=100)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    flush_interval: float = Field(default=1.0, gt=0, le=60)
    queue_size: int = Field(default=200_000, ge=100, le=10_000_000)
    partition_days_ahead: int = Field(default=3, ge=1, le=60)
    spool_after: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="Seconds of failed writes before buffered results go to the spool file in "
        "state_dir/spool (0: at the first failure, so a crash loses at most one flush interval)",
    )


class ApiSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    token: SecretStr | None = None
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    read_token_required: bool = Field(
        default=False,
        description="GETs under /api/ need the token too (/healthz and /readyz stay open)",
    )
    public_status_page: bool = Field(
        default=False,
        description="The status page (/) and badges open to anyone, without URLs or error "
        "details; with the token (login form or bearer header) operators see everything",
    )

    @field_validator("host")
    @classmethod
    def _check_host(cls, host: str) -> str:
        # an address to listen on: an IP (0.0.0.0, ::) or a name that resolves to one; caught
        # here, not as a resolver error when the daemon starts
        if not host:  # asyncio would take "" for every interface, without a word
            raise ValueError("must not be empty: give 0.0.0.0 or :: to listen on every interface")
        problem = host_problem(host)
        if problem:
            raise ValueError(f"{host!r} {problem}")
        return host

    @field_validator("port", mode="before")
    @classmethod
    def _port_not_a_switch(cls, port: Any) -> Any:
        # lax on purpose ("8787" from an environment variable is a port), but true is not 1
        if isinstance(port, bool):
            raise ValueError("must be a port number (0: any free port), not true or false")
        return port

    @model_validator(mode="after")
    def _read_protection_needs_a_token(self) -> ApiSettings:
        if self.read_token_required and not (self.token and self.token.get_secret_value()):
            raise ValueError("read_token_required = true needs api.token")
        return self


class SchedulerSettings(Section):
    max_concurrency: int = Field(default=500, ge=1, le=100_000)
    tick_interval: float = Field(
        default=0.5, gt=0, le=10, description="Seconds between APScheduler dispatch ticks"
    )


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


class RedisSettings(Section):
    """[redis]: the status view for other readers (see README, Redis); off while url is empty."""

    url: SecretStr | None = Field(default=None, description="redis://[:password@]host:port/db")
    key_prefix: str = Field(default="availmon:", min_length=1, max_length=100)
    channel: str | None = Field(
        default=None, min_length=1, description="Pub/sub channel; default <key_prefix>events"
    )
    timeout: float = Field(default=2.0, gt=0, le=60, description="Seconds per Redis round trip")
    retry_max: float = Field(default=30.0, gt=0, le=600, description="Longest retry backoff, s")
    event_queue_size: int = Field(default=10_000, ge=10, le=1_000_000)

    @property
    def enabled(self) -> bool:
        return self.url is not None and bool(self.url.get_secret_value().strip())

    @property
    def events_channel(self) -> str:
        return self.channel or f"{self.key_prefix}events"


class ElasticsearchSettings(Section):
    """[elasticsearch]: every status row indexed (see README, Elasticsearch); off without hosts."""

    hosts: list[str] = Field(default_factory=list, description="http(s)://host:port, one or more")
    index_prefix: str = Field(default="availmon-status", pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    batch_size: int = Field(default=1000, ge=1, le=10_000, description="Documents per _bulk")
    backlog_rate: float = Field(
        default=5000.0, gt=0, le=1_000_000, description="Documents/s while a backlog drains"
    )
    memory_rows: int = Field(
        default=100_000,
        ge=0,
        le=10_000_000,
        description="Committed rows held in memory until indexed; more are read from PostgreSQL",
    )
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: Path | None = None
    request_timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds per request")
    retry_max: float = Field(default=30.0, gt=0, le=600, description="Longest retry backoff, s")

    @model_validator(mode="after")
    def _check_access(self) -> ElasticsearchSettings:
        for host in self.hosts:
            if not host.startswith(("http://", "https://")):
                raise ValueError(f"hosts: {host!r} must start with http:// or https://")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.api_key is not None and self.username is not None:
            raise ValueError("use either api_key or username/password, not both")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.hosts)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVAILMON_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    daemon: DaemonSettings = DaemonSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    logging: LoggingSettings = LoggingSettings()
    redis: RedisSettings = RedisSettings()
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    endpoints: list[EndpointSpec] = Field(default_factory=list)
    maintenance: list[MaintenanceConfig] = Field(default_factory=list)
    notifications: NotificationSettings = NotificationSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init data; environment variables win over them.
        return (env_settings, init_settings)

    @property
    def endpoint_specs(self) -> list[AnyEndpoint]:
        return list(self.endpoints)


def config_warnings(settings: Settings) -> list[FieldError]:
    """What is valid but works against the operator: reported, never refused."""
    warnings = []
    for index, endpoint in enumerate(settings.endpoint_specs):
        if not endpoint.is_active:
            continue  # never checked: nothing to overrun
        overrun = endpoint.overrun_warning()
        if overrun is not None:
            warnings.append(FieldError(f"endpoints[{index}].retries", overrun))
    return warnings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomli.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), [FieldError("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [FieldError("", f"cannot read: {exc.strerror}")]) from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(str(path), [FieldError("", f"invalid TOML: {exc}")]) from None
    except UnicodeDecodeError as exc:
        message = f"invalid TOML: not UTF-8 (byte {exc.start})"
        raise ConfigError(str(path), [FieldError("", message)]) from None


def _env_hint(key: str) -> str:
    parts = key.split(".")
    if len(parts) == 2:
        var = f"AVAILMON_{parts[0].upper()}__{parts[1].upper()}"
        if var in os.environ:
            return f" (value from environment variable {var})"
    return ""


def _unknown_env_sections() -> list[FieldError]:
    """AVAILMON_SECTION__KEY variables whose SECTION is none of ours: pydantic-settings reads
    only the variables of the sections it knows, so a typo there (AVAILMON_APII__PORT) would
    be ignored without a word. Variables without the "__" (AVAILMON_CONFIG) are not settings."""
    sections = set(Settings.model_fields)
    problems = []
    for var in sorted(os.environ):
        name = var.upper()
        if not name.startswith("AVAILMON_") or "__" not in name:
            continue
        section = name.removeprefix("AVAILMON_").split("__", 1)[0].lower()
        if section not in sections:
            known = ", ".join(sorted(sections))
            message = f"unknown section {section!r} in environment variable (sections: {known})"
            problems.append(FieldError(var, message))
    return problems


def load_settings(path: str | Path) -> Settings:
    """Read and validate the config; raise ConfigError listing every problem with its key."""
    path = Path(path)
    data = _read_toml(path)
    # pydantic-settings takes "_env_file", "_cli_parse_args", ... as arguments, not settings
    reserved = sorted(k for k in data if k.startswith("_"))
    if reserved:
        raise ConfigError(str(path), [FieldError(key_path((k,)), "unknown key") for k in reserved])
    if unknown := _unknown_env_sections():
        raise ConfigError(str(path), unknown)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = [FieldError(p.field, p.message + _env_hint(p.field)) for p in field_errors(exc)]
        raise ConfigError(str(path), problems) from None
    problems = []
    first_seen: dict[str, int] = {}
    for index, endpoint in enumerate(settings.endpoint_specs):
        if endpoint.name in first_seen:
            other = first_seen[endpoint.name]
            message = f"duplicate name {endpoint.name!r} (also endpoints[{other}])"
            problems.append(FieldError(f"endpoints[{index}].name", message))
        first_seen.setdefault(endpoint.name, index)
    window_seen: dict[str, int] = {}
    for index, window in enumerate(settings.maintenance):
        if window.name in window_seen:
            other = window_seen[window.name]
            message = f"duplicate name {window.name!r} (also maintenance[{other}])"
            problems.append(FieldError(f"maintenance[{index}].name", message))
        window_seen.setdefault(window.name, index)
    if problems:
        raise ConfigError(str(path), problems)
    state_dir = settings.daemon.state_dir
    if not state_dir.is_absolute():
        resolved = (path.resolve().parent / state_dir).resolve()
        settings = settings.model_copy(
            update={"daemon": settings.daemon.model_copy(update={"state_dir": resolved})}
        )
    return settings
