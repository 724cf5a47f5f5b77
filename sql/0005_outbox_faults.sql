-- Reliability of the event outbox under faults. Never edit this file once applied: add a new
-- numbered migration instead.

-- Meta deduplicates on event_id (+ event_name): an event without a real one cannot be resent
-- safely. NOT VALID: existing databases migrate without a full check of old rows; the pump refuses
-- any such old row (status 'rejected', with the reason) instead of sending it.
ALTER TABLE cdp.conversion_events
    ADD CONSTRAINT conversion_events_event_id_not_blank
        CHECK (btrim(event_id, E' \t\n\r\f\x0B') <> '') NOT VALID;

-- 'failed': the event was handed to Meta several times but the outcome could never be recorded
-- (Meta may well have it: it deduplicates on event_id), so the pump stopped resending it.
ALTER TABLE cdp.conversion_events
    DROP CONSTRAINT conversion_events_status_check,
    ADD CONSTRAINT conversion_events_status_check
        CHECK (status IN ('pending', 'sent', 'rejected', 'expired', 'failed'));

ALTER TABLE cdp.conversion_event_deliveries
    DROP CONSTRAINT conversion_event_deliveries_status_check,
    ADD CONSTRAINT conversion_event_deliveries_status_check
        CHECK (status IN ('sent', 'rejected', 'expired', 'failed'));

ALTER TABLE cdp.conversion_delivery_runs
    ADD COLUMN failed BIGINT NOT NULL DEFAULT 0,
    -- user_data keys Meta does not document, left out of the events sent (never sent raw).
    ADD COLUMN dropped_user_data_keys BIGINT NOT NULL DEFAULT 0;

-- An event being sent to one system, or waiting to be retried. The pump claims a batch in a short
-- transaction (a lease until lease_until), talks to Meta with no transaction open, and records the
-- outcome in another short one: a delivery row, and this row deleted. A lease that runs out (the
-- worker died, or recording failed after Meta accepted) makes the event claimable again; `sends`
-- counts such claims, and past a bound the event is recorded 'failed' instead of being resent.
-- After a transient error the claim is released with not_before in the future (backoff).
CREATE TABLE cdp.conversion_event_claims (
    event_row_id BIGINT NOT NULL REFERENCES cdp.conversion_events (id) ON DELETE CASCADE,
    configuration_id INTEGER NOT NULL REFERENCES cdp.facebook_configurations (id) ON DELETE CASCADE,
    claimed_by VARCHAR(200),
    claimed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    lease_until TIMESTAMP WITH TIME ZONE NOT NULL,
    -- Claims whose outcome was never recorded, this one included.
    sends INTEGER NOT NULL DEFAULT 1,
    -- Transient failures so far (the backoff's exponent).
    failures INTEGER NOT NULL DEFAULT 0,
    not_before TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT '-infinity',
    last_error TEXT,
    PRIMARY KEY (event_row_id, configuration_id)
);
