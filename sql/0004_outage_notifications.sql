-- 0004_outage_notifications: outage management (acknowledge, manual resolve) and the
-- notification outbox.
--
-- reopen_hold: the outage was resolved by an operator while the endpoint was still failing;
-- no new outage opens for the endpoint until it has recovered (recovery_threshold UP checks
-- in a row), when the daemon clears the flag. Read at start so a restart keeps the hold.
-- resolution: how the outage ended: 'recovered', 'manual' or 'endpoint_inactive'.
ALTER TABLE outages ADD COLUMN reopen_hold boolean NOT NULL DEFAULT false;
ALTER TABLE outages ADD COLUMN resolution text
    CHECK (resolution IN ('recovered', 'manual', 'endpoint_inactive'));
CREATE INDEX outages_reopen_hold_idx ON outages (endpoint_id) WHERE reopen_hold;

-- Outbox --------------------------------------------------------------------------------------
-- One row per event, written in the same transaction as the outage change it reports, so an
-- event exists exactly when its change was committed. `id` is the stable event id sent in the
-- body and the X-Availmon-Event-Id header; `seq` orders delivery.
CREATE TABLE notification_events (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             uuid NOT NULL UNIQUE,
    kind           text NOT NULL,
    outage_id      bigint NOT NULL REFERENCES outages (id),
    endpoint_id    bigint NOT NULL,
    endpoint_name  text NOT NULL,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX notification_events_outage_idx ON notification_events (outage_id, seq);

-- One row per (event, sink) the event passed the sink's filters for. A sink delivers its rows
-- in seq order, one at a time; a failed attempt moves next_attempt_at out (exponential
-- backoff) and later rows of the same sink wait behind it.
CREATE TABLE notification_deliveries (
    sink             text NOT NULL,
    event_seq        bigint NOT NULL REFERENCES notification_events (seq) ON DELETE CASCADE,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    delivered_at     timestamptz,
    abandoned_at     timestamptz,
    last_error       text,
    PRIMARY KEY (sink, event_seq)
);
CREATE INDEX notification_deliveries_pending_idx ON notification_deliveries (sink, event_seq)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
