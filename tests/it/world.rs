//! A test world for the audience pipeline: a migrated database with demo customers, a Meta
//! sandbox, and the worker's context pointed at both.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use cdp_meta_sync::demo::Schema;
use cdp_meta_sync::identity::{MatchKey, Normalizer};
use cdp_meta_sync::meta::MetaClient;
use cdp_meta_sync::scheduler::run_due;
use cdp_meta_sync::secret::SecretString;
use cdp_meta_sync::sync::cells::cells;
use cdp_meta_sync::sync::{RunReport, SyncContext, Trigger};
use meta_sandbox::{Sandbox, SandboxOptions, spawn};
use tokio_util::sync::CancellationToken;

use crate::support::{TestDb, migrated_database, settings_for};

pub const TOKEN: &str = "EAAtesttoken-do-not-leak-12345";

pub struct World {
    pub db: TestDb,
    pub sandbox: Sandbox,
    pub ctx: SyncContext,
}

/// Settings every pipeline test uses: small upload batches so a few thousand customers make
/// several batches, and quick retries.
pub fn env(sandbox: &Sandbox) -> Vec<(String, String)> {
    [
        ("META_GRAPH_URL", sandbox.base_url()),
        ("FACEBOOK_ACCESS_TOKEN", TOKEN.to_string()),
        ("UPLOAD_BATCH_ROWS", "250".to_string()),
        ("META_RETRY_MIN_DELAY_MS", "1".to_string()),
        ("META_RETRY_MAX_DELAY_SECS", "1".to_string()),
        ("META_RETRY_MAX_ATTEMPTS", "12".to_string()),
        ("SCHEDULER_MAX_CONCURRENT", "2".to_string()),
        ("LEASE_SECS", "60".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub async fn world(customers: u64) -> World {
    world_with(customers, Schema::Rich).await
}

/// A world whose CDP has the columns of `schema`.
pub async fn world_with(customers: u64, schema: Schema) -> World {
    let db = migrated_database().await;
    let client = db.client().await;
    cdp_meta_sync::demo::load(&client, customers, 42, schema)
        .await
        .unwrap();
    drop(client);
    let sandbox = spawn(SandboxOptions::default()).await.unwrap();
    let ctx = context(&db, &sandbox, "worker-a");
    World { db, sandbox, ctx }
}

pub fn context(db: &TestDb, sandbox: &Sandbox, worker_id: &str) -> SyncContext {
    context_with(db, sandbox, worker_id, &[])
}

/// [`context`] with more settings (`extra` wins over the test defaults).
pub fn context_with(
    db: &TestDb,
    sandbox: &Sandbox,
    worker_id: &str,
    extra: &[(&str, &str)],
) -> SyncContext {
    let vars = env(sandbox);
    let mut pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.extend_from_slice(extra);
    let settings = settings_for(db.url(), &pairs);
    let meta = MetaClient::new(&settings.meta, SecretString::from(TOKEN.to_string())).unwrap();
    let mut ctx = cdp_meta_sync::sync::run::context(settings, meta).unwrap();
    ctx.worker_id = worker_id.to_string();
    ctx
}

/// The demo systems.
pub const SYSTEMS: [&str; 3] = ["kangoo_system", "septimo_system", "digitalfarma_system"];

impl World {
    /// Each demo system's sandbox audience equals the set computed from the demo rows.
    pub async fn assert_audiences_equal_expected(&self) {
        for system in SYSTEMS {
            let audience = audience_id(&self.db, system).await;
            assert_eq!(
                sandbox_members(&self.sandbox, &audience),
                expected_members(&self.db, system).await,
                "{system}"
            );
        }
    }

    /// One `run --once` pass over every due system.
    pub async fn sync_due(&self) -> Vec<RunReport> {
        run_due(&self.ctx, Trigger::Once, &CancellationToken::new())
            .await
            .unwrap()
    }
}

pub type Row = BTreeMap<String, String>;

/// The audience a system should have, computed here from the demo tables on its own terms:
/// active segments of the system's tenants, EMAIL/PHONE/FN/LN normalized with the system's
/// default country (and each row's own country for phones, when the CDP has that column), rows
/// with neither email nor phone left out, one row per person (email, else phone), the fullest row
/// first, then the lowest tenant and customer id.
pub async fn expected_members(db: &TestDb, system: &str) -> BTreeSet<Row> {
    expected_selection(
        db,
        system,
        "r.rfm_segment NOT IN ('Lost', 'Hibernating')",
        false,
    )
    .await
}

/// [`expected_members`] for another selection of the system's customers (`segments`: a condition
/// on `r.rfm_segment`); `valued`: each member also carries LOOKALIKE_VALUE, its CLV.
pub async fn expected_selection(
    db: &TestDb,
    system: &str,
    segments: &str,
    valued: bool,
) -> BTreeSet<Row> {
    let client = db.client().await;
    let has_country: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                             WHERE table_name = 'customers_master' AND column_name = 'country')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let country = if has_country { "c.country" } else { "NULL" };
    let rows = client
        .query(
            &format!(
                "SELECT c.id::bigint, c.tenant_id, c.email::text, c.phone::text, c.firstname::text,
                        c.lastname::text, {country}::text, f.default_country::text, {value}
                   FROM customers_master c
                   JOIN cdp_rfm_analysis r ON r.customer_id = c.id
                   JOIN cdp.facebook_configurations f ON c.tenant_id = ANY(f.tenant_ids)
                  WHERE f.system_name = $1 AND {segments}",
                value = if valued {
                    "(SELECT v.clv::text FROM cdp_clv_analysis v WHERE v.customer_id = c.id)"
                } else {
                    "NULL::text"
                }
            ),
            &[&system],
        )
        .await
        .unwrap();
    let keys = [MatchKey::Email, MatchKey::Phone, MatchKey::Fn, MatchKey::Ln];
    let mut people: HashMap<String, (usize, i32, i64, Row)> = HashMap::new();
    for r in &rows {
        let id: i64 = r.get(0);
        let tenant: i32 = r.get(1);
        let row_country: Option<&str> = r.get(6);
        let normalizer = Normalizer::new(r.get(7)).unwrap();
        let mut cells = Row::new();
        for (i, key) in keys.iter().enumerate() {
            let mut cell = String::new();
            if let Some(raw) = r.get::<_, Option<&str>>(i + 2)
                && normalizer
                    .row_cell_into(*key, raw, row_country, &mut cell)
                    .is_ok()
                && !cell.is_empty()
            {
                cells.insert(key.as_str().to_string(), cell);
            }
        }
        let mut value = String::new();
        if let Some(raw) = r.get::<_, Option<&str>>(8)
            && normalizer
                .row_cell_into(MatchKey::LookalikeValue, raw, None, &mut value)
                .is_ok()
            && !value.is_empty()
        {
            cells.insert("LOOKALIKE_VALUE".to_string(), value);
        }
        let person = match (cells.get("EMAIL"), cells.get("PHONE")) {
            (Some(e), _) => format!("EMAIL:{e}"),
            (None, Some(p)) => format!("PHONE:{p}"),
            (None, None) => continue,
        };
        let candidate = (cells.len(), tenant, id, cells);
        let better = |a: &(usize, i32, i64, Row), b: &(usize, i32, i64, Row)| {
            a.0 > b.0 || (a.0 == b.0 && (a.1, a.2) < (b.1, b.2))
        };
        match people.get(&person) {
            Some(current) if !better(&candidate, current) => {}
            _ => {
                people.insert(person, candidate);
            }
        }
    }
    people.into_values().map(|(_, _, _, row)| row).collect()
}

pub async fn audience_id(db: &TestDb, system: &str) -> String {
    db.client()
        .await
        .query_one(
            "SELECT custom_audience_id FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
        .expect("audience id stored")
}

/// Members in a system's ledger.
pub async fn ledger_size(db: &TestDb, system: &str) -> usize {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM cdp.facebook_audience_members m
               JOIN cdp.facebook_configurations f ON f.id = m.configuration_id
              WHERE f.system_name = $1 AND m.definition_id = 0",
            &[&system],
        )
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

pub fn sandbox_members(sandbox: &Sandbox, audience_id: &str) -> BTreeSet<Row> {
    sandbox.members(audience_id).into_iter().collect()
}

pub async fn make_due(db: &TestDb) {
    db.client()
        .await
        .batch_execute("UPDATE cdp.facebook_configurations SET next_sync = now()")
        .await
        .unwrap();
}

/// Only kangoo is synced.
pub async fn only_kangoo(w: &World) {
    w.db.client()
        .await
        .batch_execute(
            "UPDATE cdp.facebook_configurations SET is_active = (system_name = 'kangoo_system')",
        )
        .await
        .unwrap();
}

/// The system's ledger, decoded to rows as the sandbox reports its members.
pub async fn ledger_rows(w: &World, system: &str) -> BTreeSet<Row> {
    ledger_rows_of(w, system, 0).await
}

/// The ledger of one of the system's audiences (`definition_id` 0: its own).
pub async fn ledger_rows_of(w: &World, system: &str, definition_id: i32) -> BTreeSet<Row> {
    let rows =
        w.db.client()
            .await
            .query(
                "SELECT m.match_keys, m.cells FROM cdp.facebook_audience_members m
                   JOIN cdp.facebook_configurations f ON f.id = m.configuration_id
                  WHERE f.system_name = $1 AND m.definition_id = $2",
                &[&system, &definition_id],
            )
            .await
            .unwrap();
    rows.iter()
        .map(|r| {
            let keys: &str = r.get(0);
            let packed: &[u8] = r.get(1);
            keys.split(',')
                .zip(cells(packed))
                .filter_map(|(key, cell)| {
                    let value = cell.expect("a ledger row decodes").with_str(str::to_string);
                    (!value.is_empty()).then(|| (key.to_string(), value))
                })
                .collect()
        })
        .collect()
}

/// The system's `error_log`.
pub async fn error_log(db: &TestDb, system: &str) -> Option<String> {
    db.client()
        .await
        .query_one(
            "SELECT error_log FROM cdp.facebook_configurations WHERE system_name = $1",
            &[&system],
        )
        .await
        .unwrap()
        .get(0)
}

/// Customers of the system each alone behind their audience member (no other row of the system
/// has the same normalized email), with that member's EMAIL cell: whatever happens to one of them
/// (suppressed, refused by Meta) happens to exactly that member.
pub async fn lone_members(w: &World, system: &str, n: usize) -> Vec<(i64, String)> {
    let rows =
        w.db.client()
            .await
            .query(
                "SELECT c.id::bigint, c.email::text, f.default_country::text
                   FROM customers_master c
                   JOIN cdp_rfm_analysis r ON r.customer_id = c.id
                   JOIN cdp.facebook_configurations f ON c.tenant_id = ANY(f.tenant_ids)
                  WHERE f.system_name = $1 AND r.rfm_segment NOT IN ('Lost', 'Hibernating')
                  ORDER BY c.id",
                &[&system],
            )
            .await
            .unwrap();
    let mut by_email: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &rows {
        let normalizer = Normalizer::new(r.get(2)).unwrap();
        let mut cell = String::new();
        if let Some(raw) = r.get::<_, Option<&str>>(1)
            && normalizer
                .row_cell_into(MatchKey::Email, raw, None, &mut cell)
                .is_ok()
            && !cell.is_empty()
        {
            by_email.entry(cell).or_default().push(r.get(0));
        }
    }
    let expected = expected_members(&w.db, system).await;
    let mut lone: Vec<(i64, String)> = by_email
        .into_iter()
        .filter(|(email, ids)| {
            ids.len() == 1
                && expected
                    .iter()
                    .any(|m| m.get("EMAIL").is_some_and(|e| e == email))
        })
        .map(|(email, ids)| (ids[0], email))
        .collect();
    lone.sort();
    assert!(lone.len() >= n, "only {} lone members", lone.len());
    lone.truncate(n);
    lone
}
