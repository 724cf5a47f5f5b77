-- Consent: a system may name who must never be in its audiences. Either or both of
--   opt_out_column     a boolean column of customers_master (true = opted out), e.g. 'marketing_opt_out'
--   suppression_table  a table with a customer_id column listing suppressed customers,
--                      e.g. 'cdp.suppressed_customers'
-- Suppressed customers are never uploaded and are removed from the audience if they are in it
-- (in every sync mode, and whatever the removal guard decides). Names only, checked here for
-- their shape and by the worker against the catalog; a name that does not resolve makes the
-- system invalid_config.
ALTER TABLE cdp.facebook_configurations
    ADD COLUMN IF NOT EXISTS opt_out_column TEXT
        CHECK (opt_out_column ~ '^[a-z_][a-z0-9_]{0,62}$'),
    ADD COLUMN IF NOT EXISTS suppression_table TEXT
        CHECK (suppression_table ~ '^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$');

-- Per run: customers held back by consent, and audience members removed because of it.
ALTER TABLE cdp.facebook_sync_runs
    ADD COLUMN IF NOT EXISTS suppressed BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS consent_removals BIGINT NOT NULL DEFAULT 0;
