//! Taking over from the original worker in place: its database (the original design's CREATE TABLE
//! and INSERTs, audiences filled and ids stored), `migrate`, and the first sync.
use std::collections::BTreeSet;

use cdp_meta_sync::db;
use cdp_meta_sync::demo::{DEMO_SYSTEMS, Schema};
use cdp_meta_sync::meta::{Direction, UploadSession, UsersUpload};
use cdp_meta_sync::sync::Outcome;
use meta_sandbox::Faults;
use sha2::{Digest, Sha256};

use crate::app::TestApp;
use crate::members::Row;

/// The original design's DDL, as written there.
const ORIGINAL_DDL: &str = "
CREATE SCHEMA cdp;
CREATE TABLE cdp.facebook_configurations (
id SERIAL PRIMARY KEY,
system_name VARCHAR(100) UNIQUE NOT NULL,
ad_account_id VARCHAR(50) NOT NULL,
tenant_ids INTEGER[] NOT NULL,
custom_audience_id VARCHAR(50),
is_active BOOLEAN DEFAULT true,
schedule_hours INTEGER DEFAULT 48,
last_sync TIMESTAMP WITH TIME ZONE,
next_sync TIMESTAMP WITH TIME ZONE,
total_customers INTEGER DEFAULT 0,
sync_status VARCHAR(50),
error_log TEXT,
created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP,
updated_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
);";

/// The original worker's `hash_data`: nothing for an empty value, else SHA-256 of
/// `value.lower().strip()` (so a blank value is `sha256("")`).
fn original_hash(value: Option<&str>) -> String {
    match value {
        None | Some("") => String::new(),
        Some(v) => const_hex::encode(Sha256::digest(v.to_lowercase().trim().as_bytes())),
    }
}

struct Takeover {
    app: TestApp,
    /// The audience the original worker filled for each system, by system name.
    audiences: Vec<(String, String)>,
}

/// The original worker's world: its table and rows, the CDP's tables with only the original
/// columns, and in the sandbox one audience per system filled the original way (every customer
/// with an email, Lost and Hibernating included, as of a month ago), its id stored in the row.
async fn original_worker_database(customers: u64) -> Takeover {
    let app = TestApp::builder().empty().build().await;
    let client = app.client().await;
    client.batch_execute(ORIGINAL_DDL).await.unwrap();
    for (name, account, tenants) in DEMO_SYSTEMS {
        client
            .execute(
                "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, is_active, schedule_hours)
                 VALUES ($1, $2, $3, true, 48)",
                &[&name, &account, &tenants],
            )
            .await
            .unwrap();
    }
    // The CDP's tables; demo data needs our table to list systems, so a scratch database makes
    // the rows and they are copied over (the original worker's rows stay as they are).
    let scratch = TestApp::builder().build().await;
    let scratch_client = scratch.client().await;
    cdp_meta_sync::demo::load(&scratch_client, customers, 42, Schema::Original)
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE customers_master (id INTEGER NOT NULL, tenant_id INTEGER NOT NULL,
                 email VARCHAR(255), phone VARCHAR(50), firstname VARCHAR(100), lastname VARCHAR(100));
             CREATE TABLE cdp_rfm_analysis (customer_id INTEGER NOT NULL, rfm_segment VARCHAR(50) NOT NULL);
             CREATE TABLE cdp_clv_analysis (customer_id INTEGER NOT NULL, clv NUMERIC(12,2) NOT NULL);",
        )
        .await
        .unwrap();
    let customers_rows = scratch_client
        .query(
            "SELECT id, tenant_id, email::text, phone::text, firstname::text, lastname::text FROM customers_master",
            &[],
        )
        .await
        .unwrap();
    for chunk in customers_rows.chunks(1000) {
        let ids: Vec<i32> = chunk.iter().map(|r| r.get(0)).collect();
        let tenants: Vec<i32> = chunk.iter().map(|r| r.get(1)).collect();
        let col = |i: usize| -> Vec<Option<String>> { chunk.iter().map(|r| r.get(i)).collect() };
        client
            .execute(
                "INSERT INTO customers_master SELECT * FROM UNNEST($1::int[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[])",
                &[&ids, &tenants, &col(2), &col(3), &col(4), &col(5)],
            )
            .await
            .unwrap();
    }
    let segments = scratch_client
        .query(
            "SELECT customer_id, rfm_segment::text FROM cdp_rfm_analysis",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<i32> = segments.iter().map(|r| r.get(0)).collect();
    let names: Vec<String> = segments.iter().map(|r| r.get(1)).collect();
    client
        .execute(
            "INSERT INTO cdp_rfm_analysis SELECT * FROM UNNEST($1::int[], $2::text[])",
            &[&ids, &names],
        )
        .await
        .unwrap();

    let mut audiences = Vec::new();
    for (name, account, tenants) in DEMO_SYSTEMS {
        let audience = app
            .ctx
            .meta
            .create_custom_audience(
                account,
                &format!("CDP - {name} - 2026-11"),
                "Audiencia sincronizada desde Nerdistan CDP",
            )
            .await
            .unwrap();
        let rows: Vec<Vec<String>> = client
            .query(
                "SELECT DISTINCT c.email, c.phone, c.firstname, c.lastname, c.tenant_id
                   FROM customers_master c
                   JOIN cdp_rfm_analysis r ON c.id = r.customer_id
                  WHERE c.tenant_id = ANY($1) AND c.email IS NOT NULL AND c.email != ''",
                &[&tenants],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (0..4).map(|i| original_hash(r.get(i))).collect())
            .collect();
        for (i, batch) in rows.chunks(10_000).enumerate() {
            let upload = UsersUpload {
                schema: &["EMAIL", "PHONE", "FN", "LN"],
                rows: &batch.to_vec(),
                session: UploadSession {
                    session_id: 77,
                    batch_seq: i as u32 + 1,
                    last_batch_flag: (i + 1) * 10_000 >= rows.len(),
                    estimated_num_total: None,
                },
            };
            app.ctx
                .meta
                .upload_users(Direction::Add, account, &audience, &upload)
                .await
                .unwrap();
        }
        client
            .execute(
                "UPDATE cdp.facebook_configurations
                    SET custom_audience_id = $2, sync_status = 'success', last_sync = now() - interval '2 days',
                        next_sync = now() - interval '1 minute', total_customers = $3
                  WHERE system_name = $1",
                &[&name, &audience, &(rows.len() as i32)],
            )
            .await
            .unwrap();
        audiences.push((name.to_string(), audience));
    }
    drop(client);
    Takeover { app, audiences }
}

impl std::ops::Deref for Takeover {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Takeover {
    async fn migrate(&self) -> db::migrate::MigrationReport {
        let mut client = db::connect_single(self.database_settings()).await.unwrap();
        db::migrate::run(&mut client).await.unwrap()
    }

    /// Every row of the table, as text, in the original design's columns.
    async fn original_columns(&self) -> Vec<Vec<Option<String>>> {
        self.client()
            .await
            .query(
                "SELECT id::text, system_name::text, ad_account_id::text, tenant_ids::text,
                        custom_audience_id::text, is_active::text, schedule_hours::text,
                        last_sync::text, next_sync::text, total_customers::text, sync_status::text,
                        error_log::text, created_at::text
                   FROM cdp.facebook_configurations ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (0..13).map(|i| r.get(i)).collect())
            .collect()
    }

    fn audiences_in(&self, account: &str) -> usize {
        self.sandbox
            .audiences()
            .iter()
            .filter(|a| a.ad_account_id == account)
            .count()
    }
}

#[tokio::test]
async fn migrate_upgrades_the_original_table_in_place_and_the_first_sync_rebuilds_each_audience_to_the_source_set()
 {
    let t = original_worker_database(4_000).await;
    let before = t.original_columns().await;
    let filled: Vec<BTreeSet<Row>> = t
        .audiences
        .iter()
        .map(|(_, id)| t.sandbox_members(id))
        .collect();
    assert!(filled.iter().all(|m| m.len() > 100));

    let report = t.migrate().await;
    assert_eq!(report.adopted_rows, Some(3));
    let every_version: Vec<i32> = db::migrate::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(report.applied, every_version);
    assert_eq!(
        t.original_columns().await,
        before,
        "every row and value kept"
    );

    let reports = t.sync_due().await;
    assert_eq!(reports.len(), 3);
    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Success),
        "{reports:?}"
    );
    for ((name, audience), (_, account, _)) in t.audiences.iter().zip(DEMO_SYSTEMS) {
        let row = t
            .client()
            .await
            .query_one(
                "SELECT custom_audience_id, sync_status FROM cdp.facebook_configurations
                      WHERE system_name = $1",
                &[name],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, Option<String>>(0).as_ref(),
            Some(audience),
            "{name}: same audience"
        );
        assert_eq!(row.get::<_, String>(1), "success");
        assert_eq!(t.audiences_in(account), 1, "{name}: no second audience");
        let expected = t.expected_members(name).await;
        assert_eq!(
            t.sandbox_members(audience),
            expected,
            "{name}: the audience is exactly the source set"
        );
        assert_eq!(
            t.ledger_size(name).await,
            expected.len(),
            "{name}: the ledger records it"
        );
    }
    let replaced = t
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.operation == "replace_users" && r.status == 200)
        .count();
    assert!(replaced >= 3, "one replace session per system");

    // migrate again: nothing to apply. The next run goes on in mirror mode: no replace.
    let again = t.migrate().await;
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.adopted_rows, None);
    t.client()
        .await
        .batch_execute("UPDATE cdp.facebook_configurations SET next_sync = now()")
        .await
        .unwrap();
    let before_requests = t.sandbox.requests().len();
    assert!(
        t.sync_due()
            .await
            .iter()
            .all(|r| r.outcome == Outcome::Success)
    );
    assert!(
        t.sandbox.requests()[before_requests..]
            .iter()
            .all(|r| r.operation != "replace_users"),
        "adopted once"
    );
}

#[tokio::test]
async fn a_row_with_adopt_mode_append_keeps_what_the_audience_held_and_only_adds() {
    let t = original_worker_database(2_000).await;
    t.migrate().await;
    t.client()
        .await
        .batch_execute("UPDATE cdp.facebook_configurations SET adopt_mode = 'append'")
        .await
        .unwrap();
    let (name, audience) = &t.audiences[0];
    let held = t.sandbox_members(audience);

    assert!(
        t.sync_due()
            .await
            .iter()
            .all(|r| r.outcome == Outcome::Success)
    );

    let now = t.sandbox_members(audience);
    let expected = t.expected_members(name).await;
    assert!(now.is_superset(&expected), "the source set was added");
    assert!(now.is_superset(&held), "nothing was removed");
    assert!(
        t.sandbox
            .requests()
            .iter()
            .all(|r| r.operation != "replace_users")
    );
}

#[tokio::test]
async fn when_meta_refuses_usersreplace_the_source_set_is_added_and_the_system_is_partial_saying_why()
 {
    let t = original_worker_database(2_000).await;
    t.migrate().await;
    t.sandbox.set_faults(Faults {
        refuse_replace: true,
        ..Faults::default()
    });
    let (name, audience) = &t.audiences[0];
    let held = t.sandbox_members(audience);

    let reports = t.sync_due().await;

    assert!(
        reports.iter().all(|r| r.outcome == Outcome::Partial),
        "{reports:?}"
    );
    let row = t
        .client()
        .await
        .query_one(
            "SELECT sync_status, error_log FROM cdp.facebook_configurations WHERE system_name = $1",
            &[name],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "partial");
    let error: String = row.get(1);
    assert!(error.contains("usersreplace was refused"), "{error}");
    assert!(error.contains("2650"), "{error}");
    let now = t.sandbox_members(audience);
    assert!(now.is_superset(&t.expected_members(name).await));
    assert!(now.is_superset(&held));
}

#[tokio::test]
async fn the_adopted_table_has_exactly_the_columns_and_constraints_of_a_fresh_one() {
    let t = original_worker_database(50).await;
    t.migrate().await;
    let fresh = TestApp::builder().build().await;
    let shape = |client: deadpool_postgres::Object| async move {
        let columns: BTreeSet<String> = client
            .query(
                "SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
                   FROM information_schema.columns
                  WHERE table_schema = 'cdp' AND table_name = 'facebook_configurations'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0).replace("cdp.facebook_configurations_id_seq", "SEQ"))
            .collect();
        let constraints: BTreeSet<String> = client
            .query(
                "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
                  WHERE conrelid = 'cdp.facebook_configurations'::regclass",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let triggers: BTreeSet<String> = client
            .query(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'cdp.facebook_configurations'::regclass
                    AND NOT tgisinternal",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (columns, constraints, triggers)
    };
    assert_eq!(
        shape(t.client().await).await,
        shape(fresh.client().await).await
    );
}

#[tokio::test]
async fn statuses_outside_our_list_are_mapped_and_the_old_value_is_kept() {
    let db = TestApp::builder().empty().build().await;
    let client = db.client().await;
    client.batch_execute(ORIGINAL_DDL).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO cdp.facebook_configurations (system_name, ad_account_id, tenant_ids, sync_status) VALUES
                 ('a', 'act_1', '{1}', 'success'), ('b', 'act_1', '{1}', 'error'),
                 ('c', 'act_1', '{1}', 'running'), ('d', 'act_1', '{1}', 'whatever'),
                 ('e', 'act_1', '{1}', NULL), ('f', 'act_1', '{1}', 'Completed ')",
        )
        .await
        .unwrap();
    let mut single = db::connect_single(db.database_settings()).await.unwrap();
    let report = db::migrate::run(&mut single).await.unwrap();
    let mapped: Vec<(String, String, String)> = report.mapped_statuses;
    assert_eq!(
        mapped,
        [
            ("b", "error", "failed"),
            ("c", "running", "interrupted"),
            ("d", "whatever", "pending"),
            ("f", "Completed ", "success"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .to_vec()
    );
    let rows: Vec<(String, Option<String>, Option<String>)> = client
        .query(
            "SELECT system_name::text, sync_status::text, legacy_sync_status::text
               FROM cdp.facebook_configurations ORDER BY system_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows[0], ("a".into(), Some("success".into()), None));
    assert_eq!(
        rows[1],
        ("b".into(), Some("failed".into()), Some("error".into()))
    );
    assert_eq!(rows[4], ("e".into(), None, None));
}

#[tokio::test]
async fn two_migrations_started_together_on_the_original_table_adopt_it_once() {
    let db = TestApp::builder().empty().build().await;
    db.client().await.batch_execute(ORIGINAL_DDL).await.unwrap();
    let settings = db.database_settings().clone();
    let one = |settings: cdp_meta_sync::configuration::DatabaseSettings| async move {
        let mut client = db::connect_single(&settings).await.unwrap();
        db::migrate::run(&mut client).await.unwrap()
    };
    let (a, b) = tokio::join!(one(settings.clone()), one(settings));
    let adopted = [a.adopted_rows, b.adopted_rows]
        .iter()
        .filter(|r| r.is_some())
        .count();
    assert_eq!(adopted, 1);
    assert_eq!(
        a.applied.len() + b.applied.len(),
        db::migrate::MIGRATIONS.len(),
        "{a:?} {b:?}"
    );
}

#[tokio::test]
async fn a_table_that_is_not_the_original_designs_is_refused_in_one_sentence() {
    let db = TestApp::builder().empty().build().await;
    db.client()
        .await
        .batch_execute(
            "CREATE SCHEMA cdp; CREATE TABLE cdp.facebook_configurations (id int, name text)",
        )
        .await
        .unwrap();
    let mut client = db::connect_single(db.database_settings()).await.unwrap();
    let error = format!("{:#}", db::migrate::run(&mut client).await.unwrap_err());
    assert!(
        error.contains(
            "is not the original design's table (no column system_name, ad_account_id, tenant_ids)"
        ),
        "{error}"
    );
}
