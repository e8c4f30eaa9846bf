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


MAX_PATTERN_CHARS = 4096  # compiling takes ~1 ms per 50 characters, on the event loop
# The engine expands counted repeats when it compiles: (?:a{1000}){1000} takes 270 MB and
# (?:a{3000}){3000} 2.4 GB. The product of every {m,n} in the pattern bounds that expansion
# (loosely: sequential repeats multiply too), so one API write cannot exhaust memory.
MAX_REPEAT_PRODUCT = 100_000
_COUNTED_REPEAT = regex.compile(r"\{(\d*),?(\d*)\}")


def check_syntax(source: str) -> None:
    """Raise ValueError with the engine's message if `source` does not compile, as text and
    as bytes (TCP and UDP probes match bytes), or would cost too much to compile."""
    if len(source) > MAX_PATTERN_CHARS:
        raise ValueError(f"must be at most {MAX_PATTERN_CHARS} characters")
    product = 1
    for low, high in _COUNTED_REPEAT.findall(source):
        product *= max(int(low[:7] or 0), int(high[:7] or 0), 1)
        if product > MAX_REPEAT_PRODUCT:
            raise ValueError(
                f"its counted repeats ({{m,n}}) multiply to more than {MAX_REPEAT_PRODUCT}, "
                "too costly to compile"
            )
    try:
        regex.compile(source)
        regex.compile(source.encode("utf-8"))
    except (regex.error, ValueError) as exc:  # ValueError: "(?u)" in a bytes pattern
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
