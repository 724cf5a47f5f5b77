-- Where each ledger member came from, so an incremental run can skip customers that did not
-- change. Never edit this file once applied: add a new numbered migration instead.
--
-- The winning customer row of the member (the fullest row among duplicates, then the lowest tenant
-- and customer id), a digest of the raw values it was built from (with the run's match keys and
-- normalization settings), how many cells it filled, and which of its values were invalid (a bit
-- per match key, so the run's per-key skip counts stay whole when the row is not normalized again).
-- Rows written before this migration have no source: the next run rebuilds it.
ALTER TABLE cdp.facebook_audience_members
    ADD COLUMN source_tenant_id INTEGER,
    ADD COLUMN source_customer_id BIGINT,
    ADD COLUMN source_digest BIGINT,
    ADD COLUMN filled SMALLINT,
    ADD COLUMN invalid_keys INTEGER NOT NULL DEFAULT 0;

-- The foreign key to the configuration checked every ledger row written (an index probe and a
-- lock per row, more than the insert itself). The worker instead locks the configuration row once
-- per batch (FOR KEY SHARE, as the key check would), and a trigger keeps the cascade: deleting a
-- configuration deletes its ledger.
ALTER TABLE cdp.facebook_audience_members
    DROP CONSTRAINT facebook_audience_members_configuration_id_fkey;

CREATE FUNCTION cdp.delete_audience_members() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM cdp.facebook_audience_members WHERE configuration_id = OLD.id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER facebook_configurations_delete_members
    BEFORE DELETE ON cdp.facebook_configurations
    FOR EACH ROW EXECUTE FUNCTION cdp.delete_audience_members();

-- Run counts for incremental runs: customers settled by their digest without being normalized
-- again, and ledger members that only got a new source (no call to Meta).
ALTER TABLE cdp.facebook_sync_runs
    ADD COLUMN unchanged BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN refreshed BIGINT NOT NULL DEFAULT 0;
