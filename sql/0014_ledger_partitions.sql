-- The ledger, one partition per audience (a system's own, or one of its definitions').
--
-- A first sync writes hundreds of thousands of members in one run. Into an indexed table each
-- row also goes into the primary key at a random place, with the WAL of every index page it
-- touches: about 2 µs per member, more than the row itself. So a first sync loads its members
-- into a table of their own with no index (a partition-to-be), then builds the primary key once
-- and attaches the table as the audience's partition (cdp.attach_ledger): measured on 740,000
-- members, 3.3 s into the indexed table, 1.7 s loaded and then indexed.
--
-- Every statement still names cdp.facebook_audience_members; Postgres routes rows to the
-- partition and reads only the partition a statement's configuration and definition name. Rows
-- of an audience with no partition of its own go to the default partition.

ALTER TABLE cdp.facebook_audience_members RENAME TO facebook_audience_members_unpartitioned;
ALTER INDEX cdp.facebook_audience_members_pkey RENAME TO facebook_audience_members_unpartitioned_pkey;

CREATE TABLE cdp.facebook_audience_members
    (LIKE cdp.facebook_audience_members_unpartitioned INCLUDING DEFAULTS)
    PARTITION BY RANGE (configuration_id, definition_id);
ALTER TABLE cdp.facebook_audience_members
    ADD CONSTRAINT facebook_audience_members_pkey PRIMARY KEY (configuration_id, definition_id, member_key);
CREATE TABLE cdp.facebook_audience_members_default
    PARTITION OF cdp.facebook_audience_members DEFAULT;

-- The table that holds one audience's ledger rows, attached or still loading.
CREATE FUNCTION cdp.ledger_table(configuration integer, definition integer)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('facebook_audience_members_%s_%s', configuration, definition)
$$;

-- Whether a table holds an audience's ledger rows that the ledger does not show yet: a first
-- sync's load, not attached (still running, or cut short).
CREATE FUNCTION cdp.ledger_loading(configuration integer, definition integer)
RETURNS regclass
LANGUAGE sql STABLE AS $$
    SELECT t.oid::regclass
      FROM pg_class t
      JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'cdp'
     WHERE t.relname = cdp.ledger_table(configuration, definition)
       AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = t.oid)
$$;

-- Starts a first sync's load: the table to copy the audience's members into, created unindexed
-- when the audience has no partition yet. NULL: the audience has its partition (an audience
-- emptied by an operator); its rows then go through the ledger as any other write.
CREATE FUNCTION cdp.begin_ledger_load(configuration integer, definition integer)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    name text := cdp.ledger_table(configuration, definition);
BEGIN
    IF to_regclass(format('cdp.%I', name)) IS NULL THEN
        -- The check lets the attach skip its scan of the rows: they are this audience's.
        EXECUTE format(
            'CREATE TABLE cdp.%I (LIKE cdp.facebook_audience_members INCLUDING DEFAULTS,
                                  CONSTRAINT %I CHECK (configuration_id = %s AND definition_id = %s))',
            name, name || '_scope', configuration, definition);
    ELSIF cdp.ledger_loading(configuration, definition) IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN 'cdp.' || quote_ident(name);
END
$$;

-- Ends a load: builds the primary key of the loaded table and attaches it as the audience's
-- partition. Does nothing when there is no load; safe to run twice at once (the second waits for
-- the first, then finds the table attached).
CREATE FUNCTION cdp.attach_ledger(configuration integer, definition integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    name text := cdp.ledger_table(configuration, definition);
    loading regclass := cdp.ledger_loading(configuration, definition);
BEGIN
    IF loading IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', loading);
    IF cdp.ledger_loading(configuration, definition) IS NULL THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = loading AND contype = 'p') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (configuration_id, definition_id, member_key)',
                       loading, name || '_pkey');
    END IF;
    EXECUTE format('ALTER TABLE cdp.facebook_audience_members ATTACH PARTITION %s FOR VALUES FROM (%s, %s) TO (%s, %s)',
                   loading, configuration, definition, configuration, definition + 1);
    RETURN true;
END
$$;

-- Every audience already in the ledger gets its partition, loaded in key order and then indexed.
DO $$
DECLARE
    scope record;
BEGIN
    FOR scope IN SELECT DISTINCT configuration_id, definition_id
                   FROM cdp.facebook_audience_members_unpartitioned LOOP
        EXECUTE format(
            'INSERT INTO %s SELECT * FROM cdp.facebook_audience_members_unpartitioned
              WHERE configuration_id = %s AND definition_id = %s ORDER BY member_key',
            cdp.begin_ledger_load(scope.configuration_id, scope.definition_id),
            scope.configuration_id, scope.definition_id);
        PERFORM cdp.attach_ledger(scope.configuration_id, scope.definition_id);
    END LOOP;
END
$$;
DROP TABLE cdp.facebook_audience_members_unpartitioned;

-- Deleting a system or a definition deletes its ledger rows, as before, and a load of theirs that
-- never got attached. (A partition stays, empty: dropping it would lock the whole ledger.)
CREATE OR REPLACE FUNCTION cdp.delete_audience_members() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    loading regclass;
BEGIN
    DELETE FROM cdp.facebook_audience_members WHERE configuration_id = OLD.id;
    FOR loading IN SELECT cdp.ledger_loading(OLD.id, d.id)
                     FROM (SELECT 0 AS id UNION ALL
                           SELECT a.id FROM cdp.facebook_audiences a WHERE a.configuration_id = OLD.id) d LOOP
        IF loading IS NOT NULL THEN
            EXECUTE format('DROP TABLE %s', loading);
        END IF;
    END LOOP;
    RETURN OLD;
END
$$;

CREATE OR REPLACE FUNCTION cdp.delete_definition_members() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    loading regclass := cdp.ledger_loading(OLD.configuration_id, OLD.id);
BEGIN
    DELETE FROM cdp.facebook_audience_members
     WHERE configuration_id = OLD.configuration_id AND definition_id = OLD.id;
    IF loading IS NOT NULL THEN
        EXECUTE format('DROP TABLE %s', loading);
    END IF;
    RETURN OLD;
END
$$;
