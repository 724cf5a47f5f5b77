-- A first sync's load is left alone by autovacuum until its attach (#17). The load takes hundreds
-- of thousands of inserts, so it passes autovacuum's insert threshold (1,000 rows plus a fifth of
-- the table) within its first batch, and again each time it grows by a fifth: on a long first sync
-- autovacuum would scan its new pages over and over, on the machine that is busy loading them, for
-- a table the attach reads whole anyway. Worse, the attach's lock waits behind a running vacuum
-- until the deadlock check cancels it, a second later (deadlock_timeout). The attach gives the
-- partition the server's own autovacuum settings back, so the ledger is vacuumed as any table is.

CREATE OR REPLACE FUNCTION cdp.begin_ledger_load(configuration integer, definition integer)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    name text := cdp.ledger_table(configuration, definition);
BEGIN
    IF to_regclass(format('cdp.%I', name)) IS NULL THEN
        -- The check lets the attach skip its scan of the rows: they are this audience's.
        EXECUTE format(
            'CREATE TABLE cdp.%I (LIKE cdp.facebook_audience_members INCLUDING DEFAULTS,
                                  CONSTRAINT %I CHECK (configuration_id = %s AND definition_id = %s))
                    WITH (autovacuum_enabled = false)',
            name, name || '_scope', configuration, definition);
    ELSIF cdp.ledger_loading(configuration, definition) IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN 'cdp.' || quote_ident(name);
END
$$;

CREATE OR REPLACE FUNCTION cdp.attach_ledger(configuration integer, definition integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    name text := cdp.ledger_table(configuration, definition);
    loading regclass := cdp.ledger_loading(configuration, definition);
    ledger_default record;
BEGIN
    IF loading IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', loading);
    IF cdp.ledger_loading(configuration, definition) IS NULL THEN
        RETURN false;
    END IF;
    FOR ledger_default IN
        SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) AS expr
          FROM pg_attribute a
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = 'cdp.facebook_audience_members'::regclass
           AND a.attname IN ('configuration_id', 'definition_id', 'audience_id', 'match_keys', 'added_run_id') LOOP
        IF ledger_default.expr IS NULL THEN
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', loading, ledger_default.attname);
        ELSE
            EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT %s',
                           loading, ledger_default.attname, ledger_default.expr);
        END IF;
    END LOOP;
    EXECUTE format('ALTER TABLE %s RESET (autovacuum_enabled)', loading);
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = loading AND contype = 'p') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (member_key, configuration_id, definition_id)',
                       loading, name || '_pkey');
    END IF;
    EXECUTE format('ALTER TABLE cdp.facebook_audience_members ATTACH PARTITION %s FOR VALUES FROM (%s, %s) TO (%s, %s)',
                   loading, configuration, definition, configuration, definition + 1);
    RETURN true;
END
$$;
