-- Brings the original worker's cdp.facebook_configurations (the original design's CREATE TABLE) to
-- the shape migration 0001 creates, in place: every row and value is kept, ids and their sequence
-- included. `migrate` runs this instead of 0001's CREATE TABLE when the table already exists and
-- 0001 was never applied, then the rest of 0001, in one transaction.
--
-- Columns the original DDL has are added too when missing (IF NOT EXISTS), for variants of it.
-- sync_status values outside our list are mapped (the original value is kept in
-- legacy_sync_status), so the CHECK constraint holds for every row.

ALTER TABLE cdp.facebook_configurations
    ADD COLUMN IF NOT EXISTS custom_audience_id VARCHAR(50),
    ADD COLUMN IF NOT EXISTS is_active BOOLEAN DEFAULT true,
    ADD COLUMN IF NOT EXISTS schedule_hours INTEGER DEFAULT 48,
    ADD COLUMN IF NOT EXISTS last_sync TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS next_sync TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS total_customers INTEGER DEFAULT 0,
    ADD COLUMN IF NOT EXISTS sync_status VARCHAR(50),
    ADD COLUMN IF NOT EXISTS error_log TEXT,
    ADD COLUMN IF NOT EXISTS created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
    ADD COLUMN IF NOT EXISTS sync_mode VARCHAR(20) NOT NULL DEFAULT 'mirror',
    ADD COLUMN IF NOT EXISTS match_keys TEXT[] NOT NULL DEFAULT ARRAY['EMAIL', 'PHONE', 'FN', 'LN'],
    ADD COLUMN IF NOT EXISTS excluded_segments TEXT[] NOT NULL DEFAULT ARRAY['Lost', 'Hibernating'],
    ADD COLUMN IF NOT EXISTS default_country VARCHAR(2),
    ADD COLUMN IF NOT EXISTS schedule_cron VARCHAR(100),
    ADD COLUMN IF NOT EXISTS audience_name VARCHAR(200),
    ADD COLUMN IF NOT EXISTS max_removal_share NUMERIC(4, 3),
    ADD COLUMN IF NOT EXISTS force_removals BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS pixel_id VARCHAR(50),
    ADD COLUMN IF NOT EXISTS test_event_code VARCHAR(100),
    ADD COLUMN IF NOT EXISTS partner_agent VARCHAR(100),
    ADD COLUMN IF NOT EXISTS data_processing_options TEXT[],
    ADD COLUMN IF NOT EXISTS data_processing_options_country INTEGER,
    ADD COLUMN IF NOT EXISTS data_processing_options_state INTEGER,
    ADD COLUMN IF NOT EXISTS lease_owner VARCHAR(200),
    ADD COLUMN IF NOT EXISTS lease_expires_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN IF NOT EXISTS consecutive_failures INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS legacy_sync_status VARCHAR(50);

-- The original worker wrote 'success' and 'failed'; other tools and hands wrote other words.
-- Nothing runs while `migrate` runs, so a row left 'running' was interrupted.
UPDATE cdp.facebook_configurations
   SET legacy_sync_status = sync_status,
       sync_status = CASE
           WHEN lower(btrim(sync_status)) IN
                ('pending', 'running', 'success', 'partial', 'failed', 'invalid_config', 'interrupted')
               THEN CASE lower(btrim(sync_status)) WHEN 'running' THEN 'interrupted'
                                                   ELSE lower(btrim(sync_status)) END
           WHEN lower(btrim(sync_status)) IN ('ok', 'done', 'completed', 'complete', 'synced', 'succeeded')
               THEN 'success'
           WHEN lower(btrim(sync_status)) IN ('error', 'errored', 'failure', 'fail')
               THEN 'failed'
           WHEN lower(btrim(sync_status)) IN ('in_progress', 'in progress', 'syncing', 'processing', 'started')
               THEN 'interrupted'
           ELSE 'pending' END
 WHERE sync_status IS NOT NULL
   AND sync_status NOT IN ('pending', 'success', 'partial', 'failed', 'invalid_config', 'interrupted');

ALTER TABLE cdp.facebook_configurations
    ADD CONSTRAINT facebook_configurations_sync_mode_check
        CHECK (sync_mode IN ('mirror', 'append', 'replace')),
    ADD CONSTRAINT facebook_configurations_sync_status_check
        CHECK (sync_status IS NULL OR sync_status IN
            ('pending', 'running', 'success', 'partial', 'failed', 'invalid_config', 'interrupted')),
    ADD CONSTRAINT facebook_configurations_max_removal_share_check
        CHECK (max_removal_share IS NULL OR (max_removal_share >= 0 AND max_removal_share <= 1));
