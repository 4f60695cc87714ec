//! `/healthz` (the process answers), `/readyz` (its database and Redis answer) and
//! `/metrics`.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let limit = Duration::from_secs(2);
    let (database, sessions) = tokio::join!(
        tokio::time::timeout(limit, state.idm.directory.ping()),
        tokio::time::timeout(limit, state.idm.sessions.ping()),
    );
    let describe =
        |result: Result<Result<(), crate::idm::ports::PortError>, _>, name: &str| match result {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(err)) => {
                tracing::warn!(dependency = name, error = %err, "not ready");
                "unavailable".to_owned()
            }
            Err(_) => {
                tracing::warn!(dependency = name, "not ready: timed out");
                "timed out".to_owned()
            }
        };
    let database = describe(database, "database");
    let redis = describe(sessions, "redis");
    let ready = database == "ok" && redis == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "status": if ready { "ready" } else { "unavailable" }, "database": database, "redis": redis })),
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .metrics
            .render(state.idm.hasher.slots(), state.idm.hasher.waiting()),
    )
        .into_response()
}
