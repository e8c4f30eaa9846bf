"""PostgreSQL storage: migrations, the repository, the batched status writer, embedded server."""

from availmon.store.embedded import EmbeddedPostgres
from availmon.store.migrations import apply_migrations
from availmon.store.pg import dsn_with_database, redact_dsn
from availmon.store.repository import Repository
from availmon.store.writer import StatusWriter, WriterStats

__all__ = [
    "EmbeddedPostgres",
    "Repository",
    "StatusWriter",
    "WriterStats",
    "apply_migrations",
    "dsn_with_database",
    "redact_dsn",
]
