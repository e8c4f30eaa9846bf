-- 0006_uptime_rollups: hourly time-in-status per endpoint, maintained from committed status
-- rows, so uptime over 90 days reads ~2,160 rows per endpoint instead of ~780,000.
--
-- A check covers the time from its checked_at until the endpoint's next check, capped at
-- 2 x check_interval; time beyond the cap is unobserved (the daemon was down, or checks were
-- stuck). Durations are integer microseconds, so sums are exact.
CREATE TABLE uptime_hourly (
    endpoint_id     bigint NOT NULL,
    hour            timestamptz NOT NULL,
    up_us           bigint NOT NULL DEFAULT 0,
    degraded_us     bigint NOT NULL DEFAULT 0,
    down_us         bigint NOT NULL DEFAULT 0,
    maintenance_us  bigint NOT NULL DEFAULT 0,
    unknown_us      bigint NOT NULL DEFAULT 0,
    checks          integer NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint_id, hour)
);

-- The newest row rolled up per endpoint. Its coverage is credited up to covered_until
-- (checked_at + cap) as soon as it arrives; the next row takes back what it overlaps.
CREATE TABLE uptime_cursor (
    endpoint_id    bigint PRIMARY KEY,
    checked_at     timestamptz NOT NULL,
    status         status_kind NOT NULL,
    covered_until  timestamptz NOT NULL
);
