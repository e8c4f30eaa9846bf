"""Append-only spool of status rows for when PostgreSQL is unreachable.

Rows go to numbered segment files under `directory` (`segment-0000000001.spool`, ...). Each
record is framed as: 4-byte big-endian payload length, 4-byte CRC-32 of the payload, payload
(the row as compact JSON). Appends are written and fsynced in one batch per call, so a crash
loses nothing that an `append` returned for; a record half-written by a crash fails its length
or CRC check and is skipped with a warning (with the rest of that segment, which a crash can
only have cut at its end).

Replay reads the oldest segments first and deletes a segment only after all of its rows were
written; a crash during replay writes some rows twice, which the status table's primary key
(endpoint_id, checked_at) turns into no-ops.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from availmon.model import Reason, Status, StatusRow

log = structlog.get_logger("availmon.spool")

_HEADER = struct.Struct(">II")
_MAX_RECORD = 16 * 1024 * 1024
SEGMENT_ROWS = 10_000


def encode_row(row: StatusRow) -> bytes:
    payload = json.dumps(
        [
            row.endpoint_id,
            row.checked_at.isoformat(),
            row.status.value,
            row.reason.value,
            row.response_time_ms,
            row.error,
            row.attempts,
            row.details,
        ],
        separators=(",", ":"),
        default=str,
    ).encode()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_row(payload: bytes) -> StatusRow:
    endpoint_id, checked_at, status, reason, rt, error, attempts, details = json.loads(payload)
    return StatusRow(
        endpoint_id=int(endpoint_id),
        checked_at=datetime.fromisoformat(checked_at),
        status=Status(status),
        reason=Reason(reason),
        response_time_ms=rt,
        error=error,
        attempts=int(attempts),
        details=details,
    )


def read_segment(path: Path) -> Iterator[StatusRow]:
    """Rows of one segment in order; stops with a warning at a damaged record."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        problem = None
        if len(data) - offset < _HEADER.size:
            problem = "truncated header"
        else:
            length, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if length > _MAX_RECORD or len(payload) != length:
                problem = "truncated record"
            elif zlib.crc32(payload) != crc:
                problem = "checksum mismatch"
        if problem is not None:
            log.warning(
                "spool_record_damaged",
                segment=path.name,
                offset=offset,
                problem=problem,
                bytes_skipped=len(data) - offset,
            )
            return
        try:
            row = decode_row(payload)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("spool_record_unreadable", segment=path.name, offset=offset, error=str(exc))
        else:
            yield row
        offset = start + length


def _read_all(path: Path) -> list[StatusRow]:
    return list(read_segment(path))


class Spool:
    def __init__(self, directory: Path, segment_rows: int = SEGMENT_ROWS) -> None:
        self.directory = directory
        self._segment_rows = segment_rows
        self._active: Path | None = None
        self._active_rows = 0
        self.pending = 0  # rows in the spool, counted at open and kept up to date

    def open(self) -> int:
        """Create the folder if needed and count what an earlier run left; returns that count."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pending = sum(sum(1 for _ in read_segment(p)) for p in self.segments())
        if self.pending:
            log.warning("spool_found", rows=self.pending, segments=len(self.segments()))
        return self.pending

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("segment-*.spool"))

    async def append(self, rows: Sequence[StatusRow]) -> None:
        if rows:
            await asyncio.to_thread(self._append_sync, list(rows))

    def _append_sync(self, rows: list[StatusRow]) -> None:
        while rows:
            if self._active is None or self._active_rows >= self._segment_rows:
                self._active = self._next_segment()
                self._active_rows = 0
            room = self._segment_rows - self._active_rows
            chunk, rows = rows[:room], rows[room:]
            data = b"".join(encode_row(row) for row in chunk)
            with self._active.open("ab") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self._active_rows += len(chunk)
            self.pending += len(chunk)

    def _next_segment(self) -> Path:
        existing = self.segments()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 1
        path = self.directory / f"segment-{number:010d}.spool"
        path.touch()
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new file's name survives a crash too
        finally:
            os.close(dir_fd)
        return path

    async def replay(
        self, write: Callable[[list[StatusRow]], Awaitable[Any]], batch_size: int
    ) -> int:
        """Write every spooled row through `write`, oldest first; returns rows replayed.

        A failing `write` raises out of here; the segment being replayed stays and is
        replayed from its start next time."""
        replayed = 0
        self._active = None  # new appends go to a fresh segment while we replay
        for path in self.segments():
            rows = await asyncio.to_thread(_read_all, path)
            for start in range(0, len(rows), batch_size):
                await write(rows[start : start + batch_size])
            path.unlink()
            self.pending = max(0, self.pending - len(rows))
            replayed += len(rows)
            log.info("spool_segment_replayed", segment=path.name, rows=len(rows))
        return replayed
