"""Typed configuration: a TOML file, overridden by AVAILMON_SECTION__KEY environment variables.

Every model forbids unknown keys, so a typo is an error at load time, not a silent default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from availmon.errors import ConfigError, FieldError, field_errors
from availmon.model import AnyEndpoint, EndpointSpec


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DaemonSettings(Section):
    state_dir: Path = Field(
        default=Path("/var/lib/availmon"),
        description="Holds the embedded PostgreSQL cluster; relative paths are taken from the "
        "config file's folder",
    )
    shutdown_timeout: float = Field(default=10.0, gt=0, le=300)


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


class SchedulerSettings(Section):
    max_concurrency: int = Field(default=500, ge=1, le=100_000)
    tick_interval: float = Field(
        default=0.5, gt=0, le=10, description="Seconds between APScheduler dispatch ticks"
    )


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVAILMON_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    daemon: DaemonSettings = DaemonSettings()
    database: DatabaseSettings = DatabaseSettings()
    api: ApiSettings = ApiSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    logging: LoggingSettings = LoggingSettings()
    endpoints: list[EndpointSpec] = Field(default_factory=list)

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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), [FieldError("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [FieldError("", f"cannot read: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [FieldError("", f"invalid TOML: {exc}")]) from None


def _env_hint(key: str) -> str:
    parts = key.split(".")
    if len(parts) == 2:
        var = f"AVAILMON_{parts[0].upper()}__{parts[1].upper()}"
        if var in os.environ:
            return f" (value from environment variable {var})"
    return ""


def load_settings(path: str | Path) -> Settings:
    """Read and validate the config; raise ConfigError listing every problem with its key."""
    path = Path(path)
    data = _read_toml(path)
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
    if problems:
        raise ConfigError(str(path), problems)
    state_dir = settings.daemon.state_dir
    if not state_dir.is_absolute():
        resolved = (path.resolve().parent / state_dir).resolve()
        settings = settings.model_copy(
            update={"daemon": settings.daemon.model_copy(update={"state_dir": resolved})}
        )
    return settings
