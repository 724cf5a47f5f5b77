-- Audience health: after each run that reached Meta, the worker reads the audience back
-- (GET /{audience_id}) and keeps what Meta reported on the run row, so the history stays: the
-- operation and delivery status ({code, description}) and the approximate size. All NULL when
-- the run did not get that far or the read-back failed; audience_checked_at says when it was read.
ALTER TABLE cdp.facebook_sync_runs
    ADD COLUMN IF NOT EXISTS audience_operation_status INTEGER,
    ADD COLUMN IF NOT EXISTS audience_operation_message TEXT,
    ADD COLUMN IF NOT EXISTS audience_delivery_status INTEGER,
    ADD COLUMN IF NOT EXISTS audience_delivery_message TEXT,
    ADD COLUMN IF NOT EXISTS approximate_count_lower BIGINT,
    ADD COLUMN IF NOT EXISTS approximate_count_upper BIGINT,
    ADD COLUMN IF NOT EXISTS audience_checked_at TIMESTAMP WITH TIME ZONE;
