"""The Elasticsearch client, and `availmon setup-elasticsearch`."""

from __future__ import annotations

import logging
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch

from availmon.config import ElasticsearchSettings
from availmon.search.bulk import EsUnavailable, describe
from availmon.search.template import template_body, template_name


def make_client(settings: ElasticsearchSettings) -> AsyncElasticsearch:
    """A client whose retries stop at trying the other hosts: backoff and the decision to
    retry a refused (429/503) request are the sync's, so one outage logs one warning."""
    # the transport logs every request (INFO) and every failed one (WARNING, "node has
    # failed N times"); the sync logs what matters itself, once per outage
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    options: dict[str, Any] = {
        "request_timeout": settings.request_timeout,
        "max_retries": max(len(settings.hosts) - 1, 0),
        "retry_on_status": (),
        "retry_on_timeout": False,
        "verify_certs": settings.verify_certs,
    }
    if settings.ca_certs is not None:
        options["ca_certs"] = str(settings.ca_certs)
    if settings.api_key is not None:
        options["api_key"] = settings.api_key.get_secret_value()
    elif settings.username is not None and settings.password is not None:
        options["basic_auth"] = (settings.username, settings.password.get_secret_value())
    return AsyncElasticsearch(settings.hosts, **options)


async def apply_template(client: AsyncElasticsearch, prefix: str) -> None:
    """PUT the index template (idempotent); EsUnavailable with the reason if refused."""
    try:
        await client.indices.put_index_template(name=template_name(prefix), **template_body(prefix))
    except (ApiError, TransportError) as exc:
        raise EsUnavailable(f"index template: {describe(exc)}") from exc


async def setup_elasticsearch(settings: ElasticsearchSettings) -> str:
    """Apply the index template; returns the template name."""
    client = make_client(settings)
    try:
        await apply_template(client, settings.index_prefix)
    finally:
        await client.close()
    return template_name(settings.index_prefix)
