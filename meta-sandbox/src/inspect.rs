//! `/_sandbox/*` inspection and control endpoints, and `/healthz`. Never part of fault injection.
use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::faults::Faults;
use super::state::SandboxState;

pub fn routes() -> Router<SandboxState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/_sandbox/audiences", get(audiences))
        .route("/_sandbox/audiences/{id}", get(audience))
        .route("/_sandbox/audiences/{id}/members", get(members))
        .route("/_sandbox/requests", get(requests))
        .route("/_sandbox/events", get(events))
        .route("/_sandbox/faults", get(faults).post(set_faults))
        .route("/_sandbox/reset", post(reset))
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no audience {id}") })),
    )
        .into_response()
}

async fn audiences(State(s): State<SandboxState>) -> Response {
    Json(s.audiences()).into_response()
}

async fn audience(State(s): State<SandboxState>, Path(id): Path<String>) -> Response {
    match s.audience_summary(&id) {
        Some(a) => Json(a).into_response(),
        None => not_found(&id),
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn members(
    State(s): State<SandboxState>,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Response {
    match s.members(&id, q.limit) {
        Some(m) => Json::<Vec<BTreeMap<String, String>>>(m).into_response(),
        None => not_found(&id),
    }
}

async fn requests(State(s): State<SandboxState>) -> Response {
    Json(s.requests()).into_response()
}

#[derive(Deserialize)]
struct Pixel {
    pixel_id: Option<String>,
}

async fn events(State(s): State<SandboxState>, Query(q): Query<Pixel>) -> Response {
    Json(s.events(q.pixel_id.as_deref())).into_response()
}

async fn faults(State(s): State<SandboxState>) -> Response {
    Json(s.faults()).into_response()
}

async fn set_faults(State(s): State<SandboxState>, Json(f): Json<Faults>) -> Response {
    s.set_faults(f);
    Json(s.faults()).into_response()
}

async fn reset(State(s): State<SandboxState>) -> Response {
    s.reset();
    Json(json!({ "reset": true })).into_response()
}
