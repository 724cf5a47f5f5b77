//! `/` (the status page), `/healthz` (the Railway healthcheck) and `/metrics` (Prometheus), served
//! in scheduler mode.
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
use crate::health::Health;

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
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// The status page (see [`crate::status::render_html`]); 503 with a line of text when the
/// database cannot be read.
async fn status_page(State(state): State<AppState>) -> axum::response::Response {
    let read = async {
        let client = state.pool.get().await?;
        let rows = crate::db::status::status_rows(&**client).await?;
        let pending = crate::events::pending_by_system(&client).await?;
        anyhow::Ok(crate::status::render_html(&rows, &pending))
    };
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(html)) => axum::response::Html(html).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the status could not be read: {}", crate::db::describe(&e)),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the status could not be read in 5 s".to_string(),
        )
            .into_response(),
    }
}

/// 200 while the database answers, the scheduler loop turns, and the NOTIFY listener and the
/// event pump run; 503 otherwise.
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(5),
        crate::db::database_answers(&state.pool),
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
