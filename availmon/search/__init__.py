"""Elasticsearch: every status row indexed, with its sync state kept in PostgreSQL.

Documents, ids and the index template: availmon.search.template; the sync state:
availmon.search.outbox and sql/0003_es_sync.sql; the sync itself: availmon.search.es_sync.
"""

from availmon.search.client import setup_elasticsearch
from availmon.search.es_sync import EsSync

__all__ = ["EsSync", "setup_elasticsearch"]
