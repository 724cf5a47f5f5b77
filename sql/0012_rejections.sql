-- The run's details: entries Meta sampled as invalid (`invalid_entry_samples`, at most 100 per
-- call), traced back to the customer they came from and the key at fault. Never the value.
CREATE TABLE IF NOT EXISTS cdp.facebook_sync_rejections (
    run_id BIGINT NOT NULL REFERENCES cdp.facebook_sync_runs (id) ON DELETE CASCADE,
    configuration_id INTEGER NOT NULL,
    tenant_id INTEGER NOT NULL,
    customer_id BIGINT NOT NULL,
    match_key TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, customer_id, tenant_id, match_key)
);
CREATE INDEX IF NOT EXISTS facebook_sync_rejections_by_customer
    ON cdp.facebook_sync_rejections (configuration_id, tenant_id, customer_id);
