-- Taking over from the original worker. Never edit this file once applied: add a new numbered
-- migration instead.
--
-- A system whose custom_audience_id is set while its ledger is empty has an audience someone else
-- filled (the original worker, an operator, a crash before the first ledger write). Its first run
-- rebuilds that audience to exactly the source set with usersreplace ('replace', the default), or,
-- with 'append', keeps what is there and only adds.
ALTER TABLE cdp.facebook_configurations
    ADD COLUMN adopt_mode VARCHAR(20) NOT NULL DEFAULT 'replace',
    ADD CONSTRAINT facebook_configurations_adopt_mode_check
        CHECK (adopt_mode IN ('replace', 'append'));

-- The sync_status an adopted row had before `migrate` mapped it to one of ours (NULL otherwise;
-- see sql/adopt/original_table.sql).
ALTER TABLE cdp.facebook_configurations
    ADD COLUMN IF NOT EXISTS legacy_sync_status VARCHAR(50);
