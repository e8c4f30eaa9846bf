"""The project's exceptions.

    AvailmonError
    ├── ConfigError          config file unreadable or invalid (carries every problem found)
    ├── ValidationFailed     input from the API or a caller failed validation (field errors)
    ├── NotFound             an id or name that does not exist
    ├── Conflict             the change is not allowed in the current state (409)
    ├── StorageError         PostgreSQL could not be reached or started
    └── StartupError         the daemon could not take what it is configured to use (the
                             API's address)

    FieldValueError (a ValueError) is raised inside pydantic validators for a rule that spans
    fields, to name the fields it is about (field_errors() puts them in the key path).

Probes never raise for a failed check: failure is data (a ProbeResult with a reason).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class AvailmonError(Exception):
    code = "error"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ConfigError(AvailmonError):
    code = "config_error"

    def __init__(self, path: str, problems: list[FieldError]) -> None:
        self.path = path
        self.problems = problems
        lines = [
            f"{path}: {p.field}: {p.message}" if p.field else f"{path}: {p.message}"
            for p in problems
        ]
        super().__init__("\n".join(lines))

    @property
    def lines(self) -> list[str]:
        return str(self).splitlines()


class ValidationFailed(AvailmonError):
    code = "validation_error"

    def __init__(self, message: str, fields: list[FieldError]) -> None:
        self.message = message
        self.fields = fields
        super().__init__(message + "".join(f"; {f.field}: {f.message}" for f in fields))

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "fields": [f.to_json() for f in self.fields],
        }


class NotFound(AvailmonError):
    code = "not_found"


class Conflict(AvailmonError):
    code = "conflict"


class StorageError(AvailmonError):
    code = "storage_error"


class StartupError(AvailmonError):
    code = "startup_error"


class FieldValueError(ValueError):
    """A cross-field rule broken, said of `fields` (relative to the model validated)."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields


_UNION_TAGS = frozenset({"http", "tcp", "udp", "icmp", "dns"})
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML's bare keys; others are shown quoted


def key_path(loc: tuple[int | str, ...]) -> str:
    """('endpoints', 2, 'tcp', 'timeout') -> 'endpoints[2].timeout' (union tags dropped)."""
    out = ""
    previous_was_index = False
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            previous_was_index = True
            continue
        is_tag = part in _UNION_TAGS and (previous_was_index or i == 0) and i < len(loc) - 1
        previous_was_index = False
        if is_tag:
            continue
        if not _BARE_KEY.fullmatch(part):  # quoted as in TOML: a key cannot break the line
            part = json.dumps(part)
        out += f".{part}" if out else part
    return out


def field_errors(exc: Any) -> list[FieldError]:
    """Turn a pydantic ValidationError into field errors with readable key paths."""
    problems: list[FieldError] = []
    for err in exc.errors(include_url=False):
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            tags = [p for p in err["loc"] if isinstance(p, str) and p in _UNION_TAGS]
            if tags:
                message = f"unknown key for a {tags[-1]} endpoint"
        loc = tuple(err["loc"])
        error = err.get("ctx", {}).get("error")
        if isinstance(error, FieldValueError) and error.fields:
            problems.extend(FieldError(key_path((*loc, f)), message) for f in error.fields)
            continue
        problems.append(FieldError(key_path(loc), message))
    return problems
