"""User-supplied regular expressions that cannot hang the daemon.

`expected_pattern` runs on bodies of up to max_body_bytes at 1,000 checks a second, inside the
event loop. Python's `re` cannot be interrupted, so a catastrophic pattern such as `(a+)+$` on a
long body would block every check. We use the `regex` engine (re-compatible syntax) with its
per-search `timeout`: a search that runs longer than PATTERN_TIMEOUT_S raises PatternTimeout,
which costs that one check (UNKNOWN, reason `pattern_timeout`), never the loop.
"""

from __future__ import annotations

from typing import Any

import regex

PATTERN_TIMEOUT_S = 0.1


class PatternTimeout(Exception):
    def __init__(self, pattern: str) -> None:
        super().__init__(
            f"expected_pattern {pattern!r} ran longer than {PATTERN_TIMEOUT_S:g} s and was "
            "stopped (catastrophic backtracking?)"
        )


def check_syntax(source: str) -> None:
    """Raise ValueError with the engine's message if `source` does not compile."""
    try:
        regex.compile(source)
    except regex.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None


class Pattern:
    """A compiled pattern on text (str) or on received bytes (bytes, bytearray)."""

    def __init__(self, source: str | bytes) -> None:
        self._compiled: Any = regex.compile(source)
        self.pattern = source

    def search(self, data: str | bytes | bytearray) -> Any:
        """The first match or None; PatternTimeout when the search takes too long."""
        try:
            return self._compiled.search(data, timeout=PATTERN_TIMEOUT_S)
        except TimeoutError:
            shown = self.pattern if isinstance(self.pattern, str) else self.pattern.decode()
            raise PatternTimeout(shown) from None
