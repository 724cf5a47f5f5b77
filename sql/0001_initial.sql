-- Schema cdp: the worker's configuration, run history, audience ledger and event outbox.
-- Never edit this file once applied: add a new numbered migration instead.

CREATE SCHEMA IF NOT EXISTS cdp;

-- The original design's table, column for column; our columns all have defaults so the original
-- INSERT keeps working.
CREATE TABLE cdp.facebook_configurations (
    id SERIAL PRIMARY KEY,
    system_name VARCHAR(100) UNIQUE NOT NULL,
    ad_account_id VARCHAR(50) NOT NULL,
    tenant_ids INTEGER[] NOT NULL,
    custom_audience_id VARCHAR(50),
    is_active BOOLEAN DEFAULT true,
    schedule_hours INTEGER DEFAULT 48,
    last_sync TIMESTAMP WITH TIME ZONE,
    next_sync TIMESTAMP WITH TIME ZONE,
    total_customers INTEGER DEFAULT 0,
    sync_status VARCHAR(50),
    error_log TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,

    -- mirror: add newcomers and remove leavers; append: add only (the original behaviour);
    -- replace: Meta's usersreplace session.
    sync_mode VARCHAR(20) NOT NULL DEFAULT 'mirror',
    -- Customer-list schema keys sent to Meta, in order.
    match_keys TEXT[] NOT NULL DEFAULT ARRAY['EMAIL', 'PHONE', 'FN', 'LN'],
    -- RFM segments left out of the audience.
    excluded_segments TEXT[] NOT NULL DEFAULT ARRAY['Lost', 'Hibernating'],
    -- ISO 3166-1 alpha-2 country for phone numbers written without a country code.
    default_country VARCHAR(2),
    -- Optional 5- or 6-field cron expression (in TZ); when set it replaces schedule_hours.
    schedule_cron VARCHAR(100),
    -- Name given to the audience when it is created (default: 'CDP - <system_name>').
    audience_name VARCHAR(200),
    -- A run may remove at most this share of the audience (NULL: REMOVAL_GUARD_SHARE).
    max_removal_share NUMERIC(4, 3),
    -- Set to true by an operator to let held removals through on the next run; reset by the worker.
    force_removals BOOLEAN NOT NULL DEFAULT false,
    -- Conversions API: a pixel (dataset) id turns on event delivery for the system's tenants.
    pixel_id VARCHAR(50),
    test_event_code VARCHAR(100),
    partner_agent VARCHAR(100),
    data_processing_options TEXT[],
    data_processing_options_country INTEGER,
    data_processing_options_state INTEGER,
    -- Lease: which worker is syncing the system, and until when (renewed while it works).
    lease_owner VARCHAR(200),
    lease_expires_at TIMESTAMP WITH TIME ZONE,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT facebook_configurations_sync_mode_check
        CHECK (sync_mode IN ('mirror', 'append', 'replace')),
    CONSTRAINT facebook_configurations_sync_status_check
        CHECK (sync_status IS NULL OR sync_status IN
            ('pending', 'running', 'success', 'partial', 'failed', 'invalid_config', 'interrupted')),
    CONSTRAINT facebook_configurations_max_removal_share_check
        CHECK (max_removal_share IS NULL OR (max_removal_share >= 0 AND max_removal_share <= 1))
);

CREATE FUNCTION cdp.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$;

CREATE TRIGGER facebook_configurations_touch_updated_at
    BEFORE UPDATE ON cdp.facebook_configurations
    FOR EACH ROW EXECUTE FUNCTION cdp.touch_updated_at();

-- Wakes the scheduler (LISTEN cdp_facebook_configurations) when a system is added or steered.
CREATE FUNCTION cdp.notify_configuration_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cdp_facebook_configurations', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER facebook_configurations_notify_insert
    AFTER INSERT ON cdp.facebook_configurations
    FOR EACH ROW EXECUTE FUNCTION cdp.notify_configuration_changed();

-- Only changes an operator makes wake the scheduler, not the worker's own status writes.
CREATE TRIGGER facebook_configurations_notify_update
    AFTER UPDATE ON cdp.facebook_configurations
    FOR EACH ROW
    WHEN (OLD.next_sync IS DISTINCT FROM NEW.next_sync
       OR OLD.is_active IS DISTINCT FROM NEW.is_active
       OR OLD.schedule_hours IS DISTINCT FROM NEW.schedule_hours
       OR OLD.schedule_cron IS DISTINCT FROM NEW.schedule_cron
       OR OLD.lease_expires_at IS NOT NULL AND NEW.lease_expires_at IS NULL)
    EXECUTE FUNCTION cdp.notify_configuration_changed();

-- One row per run of one system.
CREATE TABLE cdp.facebook_sync_runs (
    id BIGSERIAL PRIMARY KEY,
    configuration_id INTEGER NOT NULL REFERENCES cdp.facebook_configurations (id) ON DELETE CASCADE,
    system_name VARCHAR(100) NOT NULL,
    trigger VARCHAR(20) NOT NULL,
    worker_id VARCHAR(200),
    sync_mode VARCHAR(20),
    audience_id VARCHAR(50),
    started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    finished_at TIMESTAMP WITH TIME ZONE,
    duration_ms BIGINT,
    outcome VARCHAR(20) NOT NULL DEFAULT 'running',
    extracted BIGINT NOT NULL DEFAULT 0,
    eligible BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    skipped_no_key BIGINT NOT NULL DEFAULT 0,
    -- Invalid values per match key, e.g. {"PHONE": 12, "EMAIL": 3}: each became an empty cell.
    skipped_invalid JSONB NOT NULL DEFAULT '{}'::jsonb,
    to_add BIGINT NOT NULL DEFAULT 0,
    to_remove BIGINT NOT NULL DEFAULT 0,
    removals_held BIGINT NOT NULL DEFAULT 0,
    added BIGINT NOT NULL DEFAULT 0,
    removed BIGINT NOT NULL DEFAULT 0,
    batches BIGINT NOT NULL DEFAULT 0,
    num_received BIGINT NOT NULL DEFAULT 0,
    num_invalid_entries BIGINT NOT NULL DEFAULT 0,
    add_session_id BIGINT,
    remove_session_id BIGINT,
    events_sent BIGINT NOT NULL DEFAULT 0,
    events_accepted BIGINT NOT NULL DEFAULT 0,
    error TEXT,
    CONSTRAINT facebook_sync_runs_trigger_check CHECK (trigger IN ('schedule', 'manual', 'once')),
    CONSTRAINT facebook_sync_runs_outcome_check
        CHECK (outcome IN ('running', 'success', 'partial', 'failed', 'invalid_config', 'interrupted'))
);

CREATE INDEX facebook_sync_runs_configuration_started
    ON cdp.facebook_sync_runs (configuration_id, started_at DESC);

-- The ledger: what we have put into each audience. Meta cannot be read back, so this is what
-- makes removals correct (a removal must carry the identifiers that were added).
CREATE TABLE cdp.facebook_audience_members (
    configuration_id INTEGER NOT NULL REFERENCES cdp.facebook_configurations (id) ON DELETE CASCADE,
    audience_id VARCHAR(50) NOT NULL,
    -- SHA-256 of the member's strongest identifier (see src/sync/member.rs).
    member_key BYTEA NOT NULL,
    -- The schema keys and the row of cells sent to Meta, packed (see src/sync/member.rs).
    match_keys TEXT NOT NULL,
    cells BYTEA NOT NULL,
    added_run_id BIGINT,
    added_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (configuration_id, member_key)
);

-- The conversion-event outbox: the CDP inserts rows, the worker sends them to /{pixel_id}/events.
CREATE TABLE cdp.conversion_events (
    id BIGSERIAL PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    event_name VARCHAR(100) NOT NULL,
    event_time TIMESTAMP WITH TIME ZONE NOT NULL,
    action_source VARCHAR(40) NOT NULL,
    event_id VARCHAR(200) NOT NULL,
    customer_id BIGINT,
    email TEXT,
    phone TEXT,
    first_name TEXT,
    last_name TEXT,
    city TEXT,
    state TEXT,
    zip TEXT,
    country TEXT,
    birth_date TEXT,
    gender TEXT,
    external_id TEXT,
    client_ip_address TEXT,
    client_user_agent TEXT,
    fbc TEXT,
    fbp TEXT,
    event_source_url TEXT,
    value NUMERIC(14, 2),
    currency VARCHAR(3),
    order_id VARCHAR(200),
    contents JSONB,
    custom_data JSONB,
    user_data JSONB,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    CONSTRAINT conversion_events_action_source_check CHECK (action_source IN
        ('email', 'website', 'app', 'phone_call', 'chat', 'physical_store', 'system_generated',
         'business_messaging', 'other')),
    CONSTRAINT conversion_events_unique_event UNIQUE (tenant_id, event_name, event_id)
);

CREATE INDEX conversion_events_tenant ON cdp.conversion_events (tenant_id, id);
