"""Elasticsearch: every status row indexed, with its sync state kept in PostgreSQL.

Documents, ids and the index template: availmon.search.template; the sync state:
availmon.search.outbox and sql/0003_es_sync.sql; the sync itself: availmon.search.es_sync.

The client library is imported only when it is used: importing elasticsearch costs ~0.5 s and
~25 MB, which a daemon without [elasticsearch] hosts should not pay (it still imports
availmon.search.outbox, to turn commit tracking off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from availmon.search.client import setup_elasticsearch
    from availmon.search.es_sync import EsSync

__all__ = ["EsSync", "setup_elasticsearch"]


def __getattr__(name: str) -> Any:
    if name == "EsSync":
        from availmon.search.es_sync import EsSync

        return EsSync
    if name == "setup_elasticsearch":
        from availmon.search.client import setup_elasticsearch

        return setup_elasticsearch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
