//! The ledger keeps each audience in a partition of its own: a first sync loads its members
//! unindexed, then builds the primary key once and attaches them (sql/0014_ledger_partitions.sql).
use cdp_meta_sync::db;
use cdp_meta_sync::sync::Outcome;

use crate::app::TestApp;

const SYSTEM: &str = "kangoo_system";

/// The configuration id of `system`.
async fn id_of(w: &TestApp, system: &str) -> i32 {
    w.client()
        .await
        .query_one(
            "SELECT id FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap()
        .get(0)
}

/// The ledger's partitions as `(table, rows, has a primary key)`, in name order.
async fn partitions(w: &TestApp) -> Vec<(String, i64, bool)> {
    let client = w.client().await;
    let names: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'cdp.facebook_audience_members'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for name in names {
        let row = client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM cdp.{name}),
                            EXISTS (SELECT 1 FROM pg_constraint
                                     WHERE conrelid = 'cdp.{name}'::regclass AND contype = 'p')"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push((name, row.get(0), row.get(1)));
    }
    out
}

/// The versions of every migration after `version`: what an upgrade from it applies.
fn migrations_after(version: i32) -> Vec<i32> {
    db::migrate::MIGRATIONS
        .iter()
        .map(|&(v, _, _)| v)
        .filter(|&v| v > version)
        .collect()
}

/// The system's own audience.
fn own(configuration: i32) -> db::LedgerScope {
    db::LedgerScope {
        configuration_id: configuration,
        definition_id: 0,
    }
}

/// Starts a load for the system's own audience (the worker's `ledger::begin_load`): its table.
async fn begin_load(client: &tokio_postgres::Client, configuration: i32) -> String {
    let of = db::ledger::LoadOf {
        scope: own(configuration),
        audience_id: "1",
        match_keys: "EMAIL",
        run_id: 1,
    };
    match db::ledger::begin_load(client, of).await.unwrap() {
        db::ledger::LoadInto::Unindexed(table) => table,
        db::ledger::LoadInto::Ledger => panic!("system {configuration} has a partition already"),
    }
}

/// Starts a load as the worker did before the load's constants became defaults (migration 16).
async fn begin_load_before_0016(client: &tokio_postgres::Client, configuration: i32) -> String {
    client
        .query_one("SELECT cdp.begin_ledger_load($1, 0)", &[&configuration])
        .await
        .unwrap()
        .get(0)
}

/// Each column's default in `table` (its expression, if it has one), in column order.
async fn defaults(client: &tokio_postgres::Client, table: &str) -> Vec<(String, Option<String>)> {
    client
        .query(
            "SELECT a.attname::text, pg_get_expr(d.adbin, d.adrelid)
               FROM pg_attribute a
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Whether the scope has a load that is not attached.
async fn loading(w: &TestApp, configuration: i32) -> bool {
    w.client()
        .await
        .query_one(
            "SELECT cdp.ledger_loading($1, 0) IS NOT NULL",
            &[&configuration],
        )
        .await
        .unwrap()
        .get(0)
}

/// Rows Meta was sent to add to audiences or to replace them with, so far.
fn rows_uploaded(w: &TestApp) -> usize {
    w.sandbox
        .requests()
        .iter()
        .filter(|r| {
            r.status == 200 && matches!(r.operation.as_str(), "add_users" | "replace_users")
        })
        .filter_map(|r| r.rows)
        .sum()
}

/// A demo CDP whose only active system, kangoo, had its first sync: with its configuration id and
/// its members.
async fn kangoo_after_its_first_sync() -> (TestApp, i32, usize) {
    let w = TestApp::builder().customers(3_000).build().await;
    w.only_kangoo().await;
    let reports = w.sync_due().await;
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
    let id = id_of(&w, SYSTEM).await;
    let members = w.ledger_size(SYSTEM).await;
    (w, id, members)
}

/// Kangoo's ledger, its audience at Meta and its source agree.
async fn assert_kangoo_is_its_source(w: &TestApp) {
    let audience = w.sandbox_members(&w.audience_id(SYSTEM).await);
    assert_eq!(w.ledger_rows(SYSTEM).await, audience, "ledger vs audience");
    assert_eq!(
        audience,
        w.expected_members(SYSTEM).await,
        "audience vs source"
    );
}

#[tokio::test]
async fn a_first_sync_loads_the_audience_into_a_partition_of_its_own_with_its_primary_key() {
    let (w, id, members) = kangoo_after_its_first_sync().await;
    let members = members as i64;
    assert!(members > 500, "{members} members");
    assert_eq!(
        partitions(&w).await,
        vec![
            (format!("facebook_audience_members_{id}_0"), members, true),
            ("facebook_audience_members_default".to_string(), 0, true),
        ]
    );
    assert!(!loading(&w, id).await);
    assert_kangoo_is_its_source(&w).await;
}

#[tokio::test]
async fn a_first_syncs_members_carry_its_audience_schema_and_run_and_its_partition_keeps_no_default_of_the_run()
 {
    let (w, id, members) = kangoo_after_its_first_sync().await;
    let client = w.client().await;
    let run: i64 = client
        .query_one(
            "SELECT id FROM cdp.facebook_sync_runs WHERE configuration_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    let constants: Vec<(i32, i32, String, i64, i64)> = client
        .query(
            "SELECT configuration_id, definition_id, audience_id, added_run_id, count(*)
               FROM cdp.facebook_audience_members WHERE configuration_id = $1
              GROUP BY 1, 2, 3, 4",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        constants,
        vec![(id, 0, w.audience_id(SYSTEM).await, run, members as i64)]
    );
    // The schema: the cells decode into the audience's rows (see assert_kangoo_is_its_source).
    assert_kangoo_is_its_source(&w).await;
    assert_eq!(
        defaults(&client, &format!("cdp.facebook_audience_members_{id}_0")).await,
        defaults(&client, "cdp.facebook_audience_members").await
    );
}

#[tokio::test]
async fn a_load_a_crash_left_unattached_joins_the_ledger_before_the_next_run_reads_it() {
    let (w, id, members) = kangoo_after_its_first_sync().await;
    // What a worker killed while loading leaves: its members in a table outside the ledger, with
    // no primary key.
    let table = format!("cdp.facebook_audience_members_{id}_0");
    w.client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE cdp.facebook_audience_members DETACH PARTITION {table};
             ALTER TABLE {table} DROP CONSTRAINT facebook_audience_members_{id}_0_pkey;"
        ))
        .await
        .unwrap();
    assert!(loading(&w, id).await);
    assert_eq!(w.ledger_size(SYSTEM).await, 0);
    let sent_before = rows_uploaded(&w);

    w.make_due().await;
    let reports = w.sync_due().await;
    assert!(
        reports.len() == 1 && reports[0].outcome == Outcome::Success,
        "{reports:?}"
    );
    // The run knew every member: nothing went to Meta again.
    assert_eq!(rows_uploaded(&w), sent_before);
    assert_eq!(w.ledger_size(SYSTEM).await, members);
    assert!(!loading(&w, id).await);
    let own = partitions(&w).await;
    assert!(
        own.contains(&(
            format!("facebook_audience_members_{id}_0"),
            members as i64,
            true
        )),
        "{own:?}"
    );
    assert_kangoo_is_its_source(&w).await;
}

#[tokio::test]
async fn an_audience_whose_ledger_was_emptied_fills_its_partition_again() {
    let (w, id, members) = kangoo_after_its_first_sync().await;
    w.client()
        .await
        .execute(
            "DELETE FROM cdp.facebook_audience_members WHERE configuration_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    w.make_due().await;
    let reports = w.sync_due().await;
    assert!(
        reports.len() == 1 && reports[0].outcome == Outcome::Success,
        "{reports:?}"
    );
    assert_eq!(w.ledger_size(SYSTEM).await, members);
    assert_eq!(
        partitions(&w).await,
        vec![
            (
                format!("facebook_audience_members_{id}_0"),
                members as i64,
                true
            ),
            ("facebook_audience_members_default".to_string(), 0, true),
        ]
    );
}

#[tokio::test]
async fn the_upgrade_moves_every_audience_of_an_existing_ledger_into_a_partition_of_its_own() {
    let w = TestApp::builder().empty().build().await;
    let mut client = db::connect_single(w.database_settings()).await.unwrap();
    db::migrate::run_through(&mut client, 13).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids)
             VALUES ('a', 'act_1', ARRAY[1]), ('b', 'act_2', ARRAY[2]);
             INSERT INTO cdp.facebook_audiences (configuration_id, name, included_segments)
             SELECT id, 'champions', ARRAY['Champions'] FROM cdp.facebook_configurations WHERE system_name = 'b';
             INSERT INTO cdp.facebook_audience_members (configuration_id, definition_id, audience_id, member_key, match_keys, cells)
             SELECT c.id, d, '1', decode(md5(c.system_name || d || g), 'hex'), 'EMAIL', '\\x00'
               FROM cdp.facebook_configurations c, generate_series(1, 3) g,
                    LATERAL (SELECT 0 AS d UNION ALL
                             SELECT a.id FROM cdp.facebook_audiences a WHERE a.configuration_id = c.id) s;",
        )
        .await
        .unwrap();
    let report = db::migrate::run(&mut client).await.unwrap();
    assert_eq!(report.applied, migrations_after(13));

    let scopes: Vec<(i32, i32)> = client
        .query(
            "SELECT DISTINCT configuration_id, definition_id FROM cdp.facebook_audience_members ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(scopes.len(), 3, "{scopes:?}");
    let mut expected: Vec<(String, i64, bool)> = scopes
        .iter()
        .map(|(c, d)| (format!("facebook_audience_members_{c}_{d}"), 3, true))
        .collect();
    expected.push(("facebook_audience_members_default".to_string(), 0, true));
    expected.sort();
    assert_eq!(partitions(&w).await, expected);
    assert!(
        client
            .query_one(
                "SELECT to_regclass('cdp.facebook_audience_members_unpartitioned')::text",
                &[]
            )
            .await
            .unwrap()
            .get::<_, Option<String>>(0)
            .is_none()
    );
    // The primary key still holds across the move.
    let again = client
        .batch_execute(
            "INSERT INTO cdp.facebook_audience_members (configuration_id, audience_id, member_key, match_keys, cells)
             SELECT configuration_id, audience_id, member_key, match_keys, cells
               FROM cdp.facebook_audience_members WHERE definition_id = 0 LIMIT 1",
        )
        .await;
    assert!(again.is_err(), "a member went in twice");
}

#[tokio::test]
async fn deleting_a_system_drops_its_load_that_never_got_attached() {
    let w = TestApp::builder().build().await;
    let client = w.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids)
             VALUES ('gone', 'act_1', ARRAY[1]), ('kept', 'act_2', ARRAY[2]);",
        )
        .await
        .unwrap();
    let gone = id_of(&w, "gone").await;
    let kept = id_of(&w, "kept").await;
    for id in [gone, kept] {
        let table = begin_load(&client, id).await;
        client
            .batch_execute(&format!(
                "INSERT INTO {table} (configuration_id, audience_id, member_key, match_keys, cells)
                 VALUES ({id}, '1', '\\x01', 'EMAIL', '\\x00')"
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute("DELETE FROM cdp.facebook_configurations WHERE system_name = 'gone'")
        .await
        .unwrap();
    assert!(!loading(&w, gone).await);
    assert!(loading(&w, kept).await);
}

/// `table`'s storage parameters (`None`: the server's own).
async fn reloptions(client: &tokio_postgres::Client, table: &str) -> Option<Vec<String>> {
    client
        .query_one(
            "SELECT reloptions::text[] FROM pg_class WHERE oid = $1::text::regclass",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn autovacuum_leaves_a_load_alone_until_its_attach_gives_it_the_servers_settings_back() {
    let w = TestApp::builder().build().await;
    let client = w.client().await;
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids)
             VALUES ('loading', 'act_1', ARRAY[1])",
        )
        .await
        .unwrap();
    let id = id_of(&w, "loading").await;
    let table = begin_load(&client, id).await;
    assert_eq!(
        reloptions(&client, &table).await,
        Some(vec!["autovacuum_enabled=false".to_string()])
    );
    client
        .batch_execute(&format!(
            "INSERT INTO {table} (member_key, cells) VALUES ('\\x01', '\\x00');
             SELECT cdp.attach_ledger({id}, 0);"
        ))
        .await
        .unwrap();
    assert!(!loading(&w, id).await);
    assert_eq!(reloptions(&client, &table).await, None);
}

/// The first column of `table`'s primary key.
async fn key_leads_with(client: &tokio_postgres::Client, table: &str) -> String {
    client
        .query_one(
            "SELECT a.attname::text FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_upgrade_leads_every_ledger_key_with_the_member_and_a_leftover_load_still_attaches() {
    let w = TestApp::builder().empty().build().await;
    let mut client = db::connect_single(w.database_settings()).await.unwrap();
    db::migrate::run_through(&mut client, 14).await.unwrap();
    // One attached audience (a) and one load a crash left with its key built (b).
    let ids: Vec<i32> = client
        .query(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids)
             VALUES ('a', 'act_1', ARRAY[1]), ('b', 'act_2', ARRAY[2]) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (a, b) = (ids[0], ids[1]);
    for id in [a, b] {
        let load = begin_load_before_0016(&client, id).await;
        client
            .batch_execute(&format!(
                "INSERT INTO {load} (configuration_id, definition_id, audience_id, member_key, match_keys, cells)
                 SELECT {id}, 0, '1', decode(md5({id} || '-' || g), 'hex'), 'EMAIL', '\\x00'
                   FROM generate_series(1, 3) g;
                 ALTER TABLE {load} ADD PRIMARY KEY (configuration_id, definition_id, member_key);"
            ))
            .await
            .unwrap();
    }
    db::ledger::attach(&client, own(a)).await.unwrap();
    let table_a = format!("cdp.facebook_audience_members_{a}_0");
    let table_b = format!("cdp.facebook_audience_members_{b}_0");
    assert_eq!(key_leads_with(&client, &table_a).await, "configuration_id");

    let report = db::migrate::run(&mut client).await.unwrap();
    assert_eq!(report.applied, migrations_after(14));
    assert_eq!(key_leads_with(&client, &table_a).await, "member_key");
    assert_eq!(
        key_leads_with(&client, "cdp.facebook_audience_members").await,
        "member_key"
    );
    let attached = db::ledger::attach(&client, own(b)).await.unwrap();
    assert!(attached, "the leftover load did not attach");
    assert_eq!(key_leads_with(&client, &table_b).await, "member_key");
    let counts: i64 = client
        .query_one("SELECT count(*) FROM cdp.facebook_audience_members", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counts, 6);
    // The key still refuses a member twice, and ON CONFLICT still finds it.
    let twice = client
        .batch_execute(&format!(
            "INSERT INTO cdp.facebook_audience_members (configuration_id, audience_id, member_key, match_keys, cells)
             SELECT configuration_id, audience_id, member_key, match_keys, cells FROM {table_b} LIMIT 1"
        ))
        .await;
    assert!(twice.is_err(), "a member went in twice");
    client
        .batch_execute(&format!(
            "INSERT INTO cdp.facebook_audience_members (configuration_id, audience_id, member_key, match_keys, cells)
             SELECT configuration_id, audience_id, member_key, match_keys, cells FROM {table_b} LIMIT 1
             ON CONFLICT (configuration_id, definition_id, member_key) DO NOTHING"
        ))
        .await
        .unwrap();
}
