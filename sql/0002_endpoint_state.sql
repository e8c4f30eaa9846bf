-- 0002_endpoint_state: when each endpoint's current status began.
--
-- Written only on a status change (rare), read once at start, so "since when" in the status
-- API survives a restart without scanning months of status rows.
CREATE TABLE endpoint_state (
    endpoint_id  bigint PRIMARY KEY REFERENCES endpoints (id),
    status       status_kind NOT NULL,
    since        timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
