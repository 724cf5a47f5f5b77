-- Conversion events: delivery state per (event, system), delivery runs, and the NOTIFY that wakes
-- the event pump. Never edit this file once applied: add a new numbered migration instead.

-- A summary of the latest delivery on the event row itself, for people reading the outbox. The
-- truth, per system, is cdp.conversion_event_deliveries: a tenant may belong to two systems with
-- pixels, and each is sent the event once.
ALTER TABLE cdp.conversion_events
    ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'pending',
    ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN last_error TEXT,
    ADD COLUMN fbtrace_id VARCHAR(100),
    ADD COLUMN sent_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    ADD CONSTRAINT conversion_events_status_check
        CHECK (status IN ('pending', 'sent', 'rejected', 'expired'));

-- One row per event pump run of one system that found work.
CREATE TABLE cdp.conversion_delivery_runs (
    id BIGSERIAL PRIMARY KEY,
    configuration_id INTEGER NOT NULL REFERENCES cdp.facebook_configurations (id) ON DELETE CASCADE,
    pixel_id VARCHAR(50) NOT NULL,
    worker_id VARCHAR(200),
    started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    finished_at TIMESTAMP WITH TIME ZONE,
    batches BIGINT NOT NULL DEFAULT 0,
    -- Events in requests Meta answered with 200 (sent) and the sum of its events_received (accepted).
    sent BIGINT NOT NULL DEFAULT 0,
    accepted BIGINT NOT NULL DEFAULT 0,
    rejected BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0,
    error TEXT
);

CREATE INDEX conversion_delivery_runs_configuration_started
    ON cdp.conversion_delivery_runs (configuration_id, started_at DESC);

-- A row exists once an event is finished for a system: sent, rejected by Meta, or expired. An event
-- of the system's tenants without such a row is pending for that system. Rows are written in the
-- same transaction that held the batch while Meta was called, so a crash leaves the batch pending.
CREATE TABLE cdp.conversion_event_deliveries (
    event_row_id BIGINT NOT NULL REFERENCES cdp.conversion_events (id) ON DELETE CASCADE,
    configuration_id INTEGER NOT NULL REFERENCES cdp.facebook_configurations (id) ON DELETE CASCADE,
    status VARCHAR(20) NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    last_error TEXT,
    fbtrace_id VARCHAR(100),
    delivery_run_id BIGINT REFERENCES cdp.conversion_delivery_runs (id) ON DELETE SET NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (event_row_id, configuration_id),
    CONSTRAINT conversion_event_deliveries_status_check
        CHECK (status IN ('sent', 'rejected', 'expired'))
);

-- Wakes the event pump (LISTEN cdp_conversion_events) once per inserting statement.
CREATE FUNCTION cdp.notify_conversion_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cdp_conversion_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER conversion_events_notify_insert
    AFTER INSERT ON cdp.conversion_events
    FOR EACH STATEMENT EXECUTE FUNCTION cdp.notify_conversion_events();
