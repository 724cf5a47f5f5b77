//! `/healthz` (the Railway healthcheck) and `/metrics` (Prometheus), served in scheduler mode.
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Router, response::IntoResponse};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::scheduler::Health;

#[derive(Clone)]
struct AppState {
    pool: Pool,
    health: Arc<Health>,
    interval: Duration,
    metrics: PrometheusHandle,
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn router(pool: Pool, health: Arc<Health>, interval: Duration) -> Router {
    let state = AppState {
        pool,
        health,
        interval,
        metrics: metrics_handle(),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// 200 while the database answers, the scheduler loop turns, and the NOTIFY listener and the
/// event pump run; 503 otherwise.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(5),
        crate::sync::run::database_answers(&state.pool),
    )
    .await
    .unwrap_or(false);
    let scheduler = state.health.loop_alive(state.interval);
    let listener = state.health.listener.load(Ordering::Relaxed);
    let events = state.health.pump.load(Ordering::Relaxed);
    let status = if database && scheduler && listener && events {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({
            "database": database, "scheduler": scheduler, "listener": listener, "events": events
        })),
    )
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// Serves until `shutdown`. Binds `[::]:port` (IPv4 too), as Railway's private network is IPv6.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
