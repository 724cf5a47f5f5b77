//! The test application: a fresh database per test on the real Postgres server named by
//! `TEST_DATABASE_URL` (or `DATABASE_URL`, which `scripts/test.sh` provides), a Meta sandbox, and
//! the worker's sync context and event pump pointed at both. Built with [`TestApp::builder`]:
//!
//! ```text
//! TestApp::builder().build().await                       // migrated, no CDP rows
//! TestApp::builder().customers(3_000).build().await      // + demo CDP (Schema::Rich)
//! TestApp::builder().customers(300).schema(Schema::Original).build().await
//! TestApp::builder().sandbox(SandboxOptions { seed: 10, ..Default::default() }).build().await
//! TestApp::builder().empty().build().await               // not migrated
//! ```
//!
//! `TEST_LOG=1 cargo test --test it NAME` shows the worker's logs in the test's output.
use std::collections::HashMap;

use cdp_meta_sync::configuration::{DatabaseSettings, Settings};
use cdp_meta_sync::db::{self, Pool};
use cdp_meta_sync::demo::Schema;
use cdp_meta_sync::events::{EventPump, PumpReport};
use cdp_meta_sync::meta::MetaClient;
use cdp_meta_sync::scheduler::run_due;
use cdp_meta_sync::secret::{ExposeSecret, SecretString};
use cdp_meta_sync::sync::{RunReport, SyncContext, Trigger};
use meta_sandbox::{Sandbox, SandboxOptions, spawn};
use tokio_util::sync::CancellationToken;

/// The access token of the sync context and of worker processes (never to appear in logs).
pub const TOKEN: &str = "EAAtesttoken-do-not-leak-12345";

pub struct TestApp {
    /// Settings pointed at this test's database (no Meta settings: see [`TestApp::context`]).
    settings: Settings,
    pool: Pool,
    pub sandbox: Sandbox,
    /// The sync context of worker `worker-a`, on its own pool (see [`TestApp::context`]).
    pub ctx: SyncContext,
}

/// The test's database goes with it: a run of the suite would otherwise leave about 150 behind.
/// Dropped from a thread of its own (a test's runtime cannot block on its own tasks), with `FORCE`
/// for the connections the test's pools still hold.
impl Drop for TestApp {
    fn drop(&mut self) {
        let url = self.settings.database.url.expose_secret().to_string();
        let Some(name) = url
            .parse::<tokio_postgres::Config>()
            .ok()
            .and_then(|c| c.get_dbname().map(str::to_string))
        else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let admin = db::connect_single(&database_settings(&server_url())).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop the test database: {e:#}");
        }
    }
}

/// What [`TestApp::build`](TestAppBuilder::build) makes.
pub struct TestAppBuilder {
    migrated: bool,
    customers: Option<u64>,
    schema: Schema,
    sandbox: SandboxOptions,
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            migrated: true,
            customers: None,
            schema: Schema::Rich,
            sandbox: SandboxOptions::default(),
        }
    }
}

impl TestAppBuilder {
    /// Loads the demo CDP (seed 42) with `n` customers, and its systems (0: the systems only).
    pub fn customers(mut self, n: u64) -> Self {
        self.customers = Some(n);
        self
    }

    /// The columns of the demo CDP (default [`Schema::Rich`]).
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    pub fn sandbox(mut self, options: SandboxOptions) -> Self {
        self.sandbox = options;
        self
    }

    /// The database is left without any migration.
    pub fn empty(mut self) -> Self {
        self.migrated = false;
        self
    }

    pub async fn build(self) -> TestApp {
        let (settings, pool) = create_database().await;
        if self.migrated {
            let mut client = db::connect_single(&settings.database).await.unwrap();
            db::migrate::run(&mut client).await.expect("migrate");
        }
        if let Some(customers) = self.customers {
            assert!(self.migrated, "the demo CDP needs a migrated database");
            let client = pool.get().await.expect("pooled connection");
            cdp_meta_sync::demo::load(&client, customers, 42, self.schema)
                .await
                .unwrap();
        }
        let sandbox = spawn(self.sandbox).await.unwrap();
        let ctx = context_for(&settings, &sandbox, "worker-a", &[]);
        TestApp {
            settings,
            pool,
            sandbox,
            ctx,
        }
    }
}

impl TestApp {
    pub async fn client(&self) -> deadpool_postgres::Object {
        self.pool.get().await.expect("pooled connection")
    }

    /// The database URL as a plain string, for child processes.
    pub fn url(&self) -> &str {
        self.settings.database.url.expose_secret()
    }

    pub fn database_settings(&self) -> &DatabaseSettings {
        &self.settings.database
    }

    /// A sync context for another worker, on its own pool.
    pub fn context(&self, worker_id: &str) -> SyncContext {
        self.context_with(worker_id, &[])
    }

    /// [`TestApp::context`] with more settings (`extra` wins over [`TestApp::worker_env`]).
    pub fn context_with(&self, worker_id: &str, extra: &[(&str, &str)]) -> SyncContext {
        context_for(&self.settings, &self.sandbox, worker_id, extra)
    }

    /// The settings of [`TestApp::ctx`] as environment variables, for worker processes.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        worker_env(&self.sandbox)
    }

    /// One `run --once` pass over every due system, with [`TestApp::ctx`].
    pub async fn sync_due(&self) -> Vec<RunReport> {
        sync_due_with(&self.ctx).await
    }

    /// An event pump (`test-worker`, two attempts per call) on the app's pool.
    pub fn pump(&self) -> EventPump {
        self.pump_with_pool(self.pool.clone())
    }

    /// [`TestApp::pump`] on another pool.
    pub fn pump_with_pool(&self, pool: Pool) -> EventPump {
        let settings = settings_for(
            self.url(),
            &[
                ("META_GRAPH_URL", &self.sandbox.base_url()),
                ("FACEBOOK_ACCESS_TOKEN", "test-token"),
                ("META_RETRY_MAX_ATTEMPTS", "2"),
                ("META_RETRY_MIN_DELAY_MS", "1"),
            ],
        );
        let meta = MetaClient::new(&settings.meta, SecretString::from("test-token")).unwrap();
        EventPump::new(pool, meta, "test-worker".into())
    }

    /// One pass of [`TestApp::pump`].
    pub async fn pump_once(&self) -> PumpReport {
        self.pump()
            .run_once(&CancellationToken::new())
            .await
            .unwrap()
    }

    /// Every system is due now.
    pub async fn make_due(&self) {
        self.client()
            .await
            .batch_execute("UPDATE cdp.facebook_configurations SET next_sync = now()")
            .await
            .unwrap();
    }

    /// Only kangoo is synced.
    pub async fn only_kangoo(&self) {
        self.client()
            .await
            .batch_execute(
                "UPDATE cdp.facebook_configurations SET is_active = (system_name = 'kangoo_system')",
            )
            .await
            .unwrap();
    }

    /// The system's `error_log`.
    pub async fn error_log(&self, system: &str) -> Option<String> {
        self.client()
            .await
            .query_one(
                "SELECT error_log FROM cdp.facebook_configurations WHERE system_name = $1",
                &[&system],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// A sync context for `worker_id` on its own pool, with [`worker_env`] and `extra` (which wins).
fn context_for(
    settings: &Settings,
    sandbox: &Sandbox,
    worker_id: &str,
    extra: &[(&str, &str)],
) -> SyncContext {
    let vars = worker_env(sandbox);
    let mut pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.extend_from_slice(extra);
    let settings = settings_for(settings.database.url.expose_secret(), &pairs);
    let meta = MetaClient::new(&settings.meta, SecretString::from(TOKEN.to_string())).unwrap();
    let mut ctx = cdp_meta_sync::sync::context(settings, meta).unwrap();
    ctx.worker_id = worker_id.to_string();
    ctx
}

/// Settings every pipeline test uses: small upload batches so a few thousand customers make
/// several batches, and quick retries.
fn worker_env(sandbox: &Sandbox) -> Vec<(String, String)> {
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

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("set TEST_DATABASE_URL to a Postgres server URL (scripts/test.sh does)")
}

/// The server URL with another database name.
fn url_for_database(name: &str) -> String {
    let server = server_url();
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (server.clone(), String::new()),
    };
    let without_db = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => base[..i].to_string(),
        _ => base,
    };
    format!("{without_db}/{name}{query}")
}

/// Settings as the worker would load them, pointed at `database_url`, plus `extra` variables.
pub fn settings_for(database_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("DATABASE_URL".into(), database_url.into());
    env.entry("LOG_FORMAT".into())
        .or_insert_with(|| "pretty".into());
    Settings::from_env(&env).expect("test settings")
}

pub fn database_settings(url: &str) -> DatabaseSettings {
    settings_for(url, &[]).database
}

/// `TEST_LOG=1 cargo test --test it NAME` shows the worker's logs in the test's output (pretty,
/// filtered by `RUST_LOG`); without it nothing is installed and tests log nothing.
fn show_logs_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            cdp_meta_sync::telemetry::init(
                cdp_meta_sync::configuration::LogFormat::Pretty,
                tracing_subscriber::fmt::TestWriter::new,
            );
        }
    });
}

/// A new, empty database on the test server: its settings and a pool on it.
async fn create_database() -> (Settings, Pool) {
    show_logs_if_asked();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = db::connect_single(&database_settings(&server_url()))
        .await
        .expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    let settings = settings_for(&url_for_database(&name), &[]);
    let pool = db::connect_pool(&settings.database).expect("pool");
    (settings, pool)
}

/// One `run --once` pass over every due system, with another context (an operator's query, other
/// settings).
pub async fn sync_due_with(ctx: &SyncContext) -> Vec<RunReport> {
    run_due(ctx, Trigger::Once, &CancellationToken::new())
        .await
        .unwrap()
}
