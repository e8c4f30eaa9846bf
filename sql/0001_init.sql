-- 0001_init: endpoints, status history (partitioned by day), outages, maintenance windows.
--
-- Migrations are numbered and forward-only. availmon.store.migrations applies each file in its
-- own transaction under an advisory lock and records it in schema_migrations, so nothing here
-- may use statements that refuse to run in a transaction (CREATE INDEX CONCURRENTLY, ...).

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Endpoints ---------------------------------------------------------------------------------
-- `spec` is the full validated spec (EndpointSpec.model_dump(mode="json")) and is what the
-- daemon reads back; name/protocol/url/is_active/severity/tags are copies kept for SQL filters.
-- Delete is soft (deleted_at) so the history of a deleted endpoint is never lost.
CREATE TABLE endpoints (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    protocol    text NOT NULL,
    url         text NOT NULL,
    spec        jsonb NOT NULL CHECK (jsonb_typeof(spec) = 'object'),
    source      text NOT NULL CHECK (source IN ('config', 'api')),
    is_active   boolean NOT NULL DEFAULT true,
    severity    text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    tags        text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

-- A name is unique among live endpoints; a deleted endpoint's name may be reused.
CREATE UNIQUE INDEX endpoints_name_live_key ON endpoints (name) WHERE deleted_at IS NULL;

-- Status history ----------------------------------------------------------------------------
CREATE TYPE status_kind AS ENUM ('UP', 'DOWN', 'DEGRADED', 'MAINTENANCE', 'UNKNOWN');

-- One row per check. Partitioned by day (statuses_YYYYMMDD, UTC day bounds) so retention is
-- DROP TABLE of a partition rather than a huge DELETE; partitions are created ahead of time
-- and on demand by the writer.
--
-- Deliberately no foreign key to endpoints: at ~1,000 rows/s the per-row lookup and the
-- share lock it takes on the endpoint row cost more than they protect, endpoints are only
-- ever soft-deleted, and the writer only writes ids it got from the endpoints table.
--
-- The primary key (endpoint_id, checked_at) is both the per-endpoint time order (newest-first
-- scans walk it backwards) and the idempotency key for a batch written twice.
-- response_time_ms is NULL when nothing answered; 0 would be a (very fast) answer.
CREATE TABLE statuses (
    endpoint_id      bigint NOT NULL,
    checked_at       timestamptz NOT NULL,
    status           status_kind NOT NULL,
    reason           text NOT NULL,
    response_time_ms real,
    error            text,
    attempts         smallint NOT NULL DEFAULT 1,
    details          jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (endpoint_id, checked_at)
) PARTITION BY RANGE (checked_at);

-- Rows arrive in time order, so a BRIN index is tiny and serves time-range scans across all
-- endpoints (e.g. "everything that failed in the last hour") within a partition.
CREATE INDEX statuses_checked_at_brin ON statuses USING brin (checked_at);

-- Outages -----------------------------------------------------------------------------------
-- started_at: the first failed check of the episode; opened_at: when failure_threshold was
-- crossed and the outage was declared; ended_at NULL while it is open.
CREATE TABLE outages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      bigint NOT NULL REFERENCES endpoints (id),
    severity         text NOT NULL CHECK (severity IN ('critical', 'high', 'medium', 'low')),
    started_at       timestamptz NOT NULL,
    opened_at        timestamptz NOT NULL,
    ended_at         timestamptz,
    reason           text,
    error            text,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_by      text,
    notes            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- At most one open outage per endpoint, enforced by the database (open_outage relies on it).
CREATE UNIQUE INDEX outages_one_open_per_endpoint ON outages (endpoint_id) WHERE ended_at IS NULL;
CREATE INDEX outages_started_at_idx ON outages (started_at DESC);
CREATE INDEX outages_endpoint_started_at_idx ON outages (endpoint_id, started_at DESC);

-- Maintenance windows -----------------------------------------------------------------------
-- One-off windows use start_time/end_time; recurring ones use cron + duration in `timezone`
-- (start_time/end_time then bound the period in which the rule applies). A window targets one
-- endpoint, endpoints carrying any of `tags`, or everything (applies_to_all).
CREATE TABLE maintenance_windows (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    description     text,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz,
    is_active       boolean NOT NULL DEFAULT true,
    endpoint_id     bigint REFERENCES endpoints (id),
    tags            text[] NOT NULL DEFAULT '{}',
    applies_to_all  boolean NOT NULL DEFAULT false,
    cron            text,
    duration        interval,
    timezone        text,
    source          text NOT NULL DEFAULT 'api' CHECK (source IN ('config', 'api')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time IS NULL OR end_time > start_time),
    CHECK ((cron IS NULL) = (duration IS NULL))
);

CREATE INDEX maintenance_windows_endpoint_idx ON maintenance_windows (endpoint_id)
    WHERE endpoint_id IS NOT NULL;
