//! The admin API: `/ready`, `/status`, `/metrics`, `/config` (shared/docs/standalone-contract.md).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};

use crate::engine::Published;

#[derive(Clone)]
struct Admin {
    published: watch::Receiver<Arc<Published>>,
    registry: Arc<Registry>,
}

pub async fn serve(
    listener: TcpListener,
    published: watch::Receiver<Arc<Published>>,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/config", get(config))
        .with_state(Admin { published, registry });
    axum::serve(listener, app).await
}

async fn ready(State(a): State<Admin>) -> Response {
    if a.published.borrow().ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn status(State(a): State<Admin>) -> Json<serde_json::Value> {
    let p = a.published.borrow().clone();
    Json(json!({ "generation": p.generation, "resources": p.statuses, "errors": p.errors }))
}

async fn config(State(a): State<Admin>) -> Json<serde_json::Value> {
    let p = a.published.borrow().clone();
    Json(json!({ "generation": p.generation, "config": *p.config }))
}

async fn metrics(State(a): State<Admin>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &a.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
