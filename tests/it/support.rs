//! Shared test fixtures: a fresh, migrated database per test on the real Postgres server named by
//! `TEST_DATABASE_URL` (or `DATABASE_URL`), which `scripts/test.sh` provides.
use std::collections::HashMap;

use cdp_meta_sync::configuration::{DatabaseSettings, Settings};
use cdp_meta_sync::db::{self, Pool};
use cdp_meta_sync::secret::ExposeSecret;

pub struct TestDb {
    pub settings: Settings,
    pub pool: Pool,
}

pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("set TEST_DATABASE_URL to a Postgres server URL (scripts/test.sh does)")
}

/// The server URL with another database name.
pub fn url_for_database(name: &str) -> String {
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

/// `TEST_LOG=1 cargo test --test it NAME` shows the worker's logs in the test's output (pretty,
/// filtered by `RUST_LOG`); without it nothing is installed and tests log nothing.
pub fn show_logs_if_asked() {
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

/// Creates an empty database (not migrated).
pub async fn empty_database() -> TestDb {
    show_logs_if_asked();
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = db::connect_single(&database_settings(&server_url()))
        .await
        .expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create database");
    let url = url_for_database(&name);
    let settings = settings_for(&url, &[]);
    let pool = db::connect_pool(&settings.database).expect("pool");
    TestDb { settings, pool }
}

/// Creates a database and applies every migration.
pub async fn migrated_database() -> TestDb {
    let test_db = empty_database().await;
    let mut client = db::connect_single(&test_db.settings.database)
        .await
        .unwrap();
    db::migrate::run(&mut client).await.expect("migrate");
    test_db
}

pub fn database_settings(url: &str) -> DatabaseSettings {
    settings_for(url, &[]).database
}

impl TestDb {
    pub async fn client(&self) -> deadpool_postgres::Object {
        self.pool.get().await.expect("pooled connection")
    }

    /// The database URL as a plain string, for child processes.
    pub fn url(&self) -> &str {
        self.settings.database.url.expose_secret()
    }
}
