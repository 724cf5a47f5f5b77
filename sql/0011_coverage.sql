-- Coverage: which cells of each ledger member are filled (bit i = match key i, as invalid_keys),
-- so that a run counts per-key coverage over every member without normalizing unchanged customers
-- again. Rows written before this migration say 0; the source digest's version changed with it
-- (src/sync/digest.rs), so the next run rebuilds every member's source once (no call to Meta
-- when the cells are the same).
ALTER TABLE cdp.facebook_audience_members
    ADD COLUMN IF NOT EXISTS filled_keys INTEGER NOT NULL DEFAULT 0;

-- Per run: the share of members with a usable value, per match key ({"EMAIL": 0.93, ...}).
ALTER TABLE cdp.facebook_sync_runs
    ADD COLUMN IF NOT EXISTS coverage JSONB NOT NULL DEFAULT '{}'::jsonb;
