//! The connection pool (deadpool-postgres) and single connections (LISTEN, COPY), over TLS when
//! the server offers it.
//!
//! `sslmode` follows libpq: `disable` is plain TCP; `prefer` (the default) and `require` encrypt
//! without verifying the certificate, which is what Railway's public Postgres (a self-signed
//! per-instance CA) needs. With `PG_CA_CERT` (a PEM file) the certificate is verified against it.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod, Runtime};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::configuration::DatabaseSettings;
use crate::secret::ExposeSecret;

pub type Pool = deadpool_postgres::Pool;

/// A pool sized and timed from the settings; connections are checked before reuse, because the
/// worker idles for hours between runs and the server may have closed them, and the check sets
/// back what a user of the connection changed (the extraction's `work_mem`): `RESET ALL` returns
/// every setting to the connection's own (those of [`pg_config`]).
pub fn connect_pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let config = pg_config(settings)?;
    let manager = Manager::from_config(
        config,
        tls_connector(settings)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Custom("RESET ALL".to_string()),
        },
    );
    let timeout = Some(Duration::from_secs(settings.connect_timeout_secs));
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()
        .context("Failed to build the Postgres pool")
}

/// One connection outside the pool, with its connection task spawned. For LISTEN use
/// [`crate::scheduler`]'s listener, which drives the connection itself.
pub async fn connect_single(settings: &DatabaseSettings) -> anyhow::Result<tokio_postgres::Client> {
    let config = pg_config(settings)?;
    let (client, connection) = config
        .connect(tls_connector(settings)?)
        .await
        .context("Failed to connect to Postgres")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

pub fn pg_config(settings: &DatabaseSettings) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = settings
        .url
        .expose_secret()
        .parse()
        .map_err(|_| anyhow::anyhow!("DATABASE_URL is not a valid connection string"))?;
    config.connect_timeout(Duration::from_secs(settings.connect_timeout_secs));
    // The server's NOTICEs (e.g. "schema already exists, skipping") are noise in our logs.
    // Staging and the diff use session temp tables and large sorts: give them memory instead
    // of spilling to disk (temp_buffers can only be set before a session's first temp table).
    // Index probes cost about as much as sequential reads on SSDs and in cache: without this the
    // planner scans a whole audience's ledger to compare a few thousand changed members.
    // No JIT: compiling a plan costs more than it saves on these statements (and the diff's
    // plans, priced with sequential scans disabled, would all be compiled).
    // Commits do not wait for the WAL flush: everything the worker writes is safe to lose in a
    // server crash (a lost ledger commit only makes the next run send that batch again, which
    // Meta takes as a no-op), and each upload batch no longer waits for a disk flush.
    // Timeouts: no statement runs, waits for a lock, or holds a transaction idle without end
    // (0 turns one off).
    if config.get_options().is_none() {
        config.options(format!(
            "-c client_min_messages=warning -c temp_buffers=128MB -c work_mem=64MB -c random_page_cost=1.1 \
             -c synchronous_commit=off -c jit=off -c statement_timeout={}s -c lock_timeout={}s \
             -c idle_in_transaction_session_timeout={}s",
            settings.statement_timeout_secs,
            settings.lock_timeout_secs,
            settings.idle_in_transaction_timeout_secs,
        ));
    }
    if config.get_application_name().is_none() {
        config.application_name("cdp-meta-sync");
    }
    Ok(config)
}

/// rustls for Postgres: verify against `PG_CA_CERT` when given, otherwise encrypt without
/// verification (libpq's `sslmode=require`).
pub fn tls_connector(settings: &DatabaseSettings) -> anyhow::Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("Failed to set up TLS")?;
    let config = match Some(settings.ca_cert.as_str()).filter(|p| !p.is_empty()) {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("PG_CA_CERT: cannot read {path}"))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: CertificateDer<'static> =
                    cert.context("PG_CA_CERT: not a PEM certificate")?;
                roots
                    .add(cert)
                    .context("PG_CA_CERT: unusable certificate")?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any server certificate but still checks the handshake signatures: encryption without
/// authentication, exactly libpq's `sslmode=require`.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether the pool reaches the database (`/healthz`).
pub async fn database_answers(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(client) => client.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    }
}

/// Asks the server to cancel what `client` is running (an extraction left behind when a run stops
/// mid-stream, which the server would otherwise go on sending).
pub async fn cancel_query(client: &tokio_postgres::Client, settings: &DatabaseSettings) {
    let cancelled = match tls_connector(settings) {
        Ok(tls) => client
            .cancel_token()
            .cancel_query(tls)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    if let Err(e) = cancelled {
        tracing::warn!(error = %super::describe(&e), "could not cancel the query");
    }
}

/// Hands a connection back as a run found it: ends the transaction the run left open, if it did
/// (a ROLLBACK outside one would warn in the worker's and the server's logs after every run), and
/// resets every setting the run changed (`RESET ALL`, as the pool's recycling does) and drops its
/// temporary tables. Outside a transaction a statement is its own,
/// so its start time is the transaction's (`now()`); in an aborted one the check itself fails.
pub async fn reset_session(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let outside_a_transaction = outside_a_transaction(client).await.unwrap_or(false);
    if !outside_a_transaction {
        client.batch_execute("ROLLBACK").await?;
    }
    client.batch_execute("RESET ALL; DISCARD TEMP").await
}

/// Whether the session has no transaction open: a simple query outside one is a transaction of its
/// own, started when the statement was received (with the extended protocol the two times differ
/// by the round trips between its messages). Fails in an aborted transaction.
pub async fn outside_a_transaction(
    client: &tokio_postgres::Client,
) -> Result<bool, tokio_postgres::Error> {
    let rows = client
        .simple_query("SELECT now() = statement_timestamp()")
        .await?;
    Ok(rows.iter().any(|message| {
        matches!(message, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))
    }))
}
