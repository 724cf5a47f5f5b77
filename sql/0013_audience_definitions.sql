-- Audience definitions: more audiences per system, each a selection of the system's customers by
-- RFM segment, e.g. a win-back audience of 'At Risk' and 'Can''t Lose Them', or an exclusion
-- audience of recent buyers. Never edit this file once applied: add a new numbered migration.
--
-- The system row's own audience stays what it was (its excluded_segments, sync_mode,
-- custom_audience_id): the default definition, so the original INSERT still works. Each row here
-- adds one more audience, synced right after the system's own in the same run (same schedule,
-- tenants, match keys, consent rule and token), with its own ledger rows, sessions, removal guard
-- and status columns.
CREATE TABLE IF NOT EXISTS cdp.facebook_audiences (
    id SERIAL PRIMARY KEY,
    configuration_id INTEGER NOT NULL REFERENCES cdp.facebook_configurations (id) ON DELETE CASCADE,
    -- The audience's name at Meta (found by it when custom_audience_id is NULL, else created).
    name VARCHAR(200) NOT NULL,
    -- The customers it holds: those in one of included_segments (NULL: every segment), minus
    -- those in one of excluded_segments.
    included_segments TEXT[],
    excluded_segments TEXT[] NOT NULL DEFAULT '{}',
    sync_mode VARCHAR(20) NOT NULL DEFAULT 'mirror',
    -- A value-based audience (Meta's is_value_based): each member carries LOOKALIKE_VALUE, the
    -- customer's cdp_clv_analysis.clv, for value-based lookalikes.
    value_based BOOLEAN NOT NULL DEFAULT false,
    custom_audience_id VARCHAR(50),
    is_active BOOLEAN NOT NULL DEFAULT true,
    max_removal_share NUMERIC(4, 3),
    force_removals BOOLEAN NOT NULL DEFAULT false,
    -- Written by the worker after each run, as on the system row.
    last_sync TIMESTAMP WITH TIME ZONE,
    total_customers INTEGER NOT NULL DEFAULT 0,
    sync_status VARCHAR(50),
    error_log TEXT,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT facebook_audiences_name_unique UNIQUE (configuration_id, name),
    CONSTRAINT facebook_audiences_sync_mode_check CHECK (sync_mode IN ('mirror', 'append', 'replace')),
    CONSTRAINT facebook_audiences_sync_status_check
        CHECK (sync_status IS NULL OR sync_status IN
            ('pending', 'running', 'success', 'partial', 'failed', 'invalid_config', 'interrupted')),
    CONSTRAINT facebook_audiences_max_removal_share_check
        CHECK (max_removal_share IS NULL OR (max_removal_share >= 0 AND max_removal_share <= 1))
);

CREATE TRIGGER facebook_audiences_touch_updated_at
    BEFORE UPDATE ON cdp.facebook_audiences
    FOR EACH ROW EXECUTE FUNCTION cdp.touch_updated_at();

-- The ledger and the run rows say which audience of the system they belong to: 0 is the
-- system's own, else the id of its row in cdp.facebook_audiences. (The default is a constant, so
-- adding the column does not rewrite the ledger; the primary key is rebuilt once.)
ALTER TABLE cdp.facebook_audience_members
    ADD COLUMN IF NOT EXISTS definition_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cdp.facebook_audience_members
    DROP CONSTRAINT facebook_audience_members_pkey,
    ADD CONSTRAINT facebook_audience_members_pkey PRIMARY KEY (configuration_id, definition_id, member_key);

ALTER TABLE cdp.facebook_sync_runs
    ADD COLUMN IF NOT EXISTS definition_id INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS audience_name VARCHAR(200);

-- Deleting a definition deletes its ledger rows (as deleting a system deletes its own).
CREATE OR REPLACE FUNCTION cdp.delete_definition_members() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM cdp.facebook_audience_members
     WHERE configuration_id = OLD.configuration_id AND definition_id = OLD.id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER facebook_audiences_delete_members
    BEFORE DELETE ON cdp.facebook_audiences
    FOR EACH ROW EXECUTE FUNCTION cdp.delete_definition_members();
