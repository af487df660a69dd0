//! Operational endpoints: health, readiness, metrics, static assets.

use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.oauth.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("tessera_password_hash_queue_depth").set(state.selfservice.hasher.queue_depth() as f64);
    match &state.metrics {
        Some(handle) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are disabled").into_response(),
    }
}

pub async fn stylesheet() -> Response {
    let mut response = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], crate::pages::STYLESHEET).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}

pub async fn brand_css(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    match state.tenant(&slug).await {
        Ok(Some(tenant)) => {
            let mut response = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], crate::pages::brand_css(&tenant)).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
            response
        }
        Ok(None) => (StatusCode::NOT_FOUND, "").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "loading tenant failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "").into_response()
        }
    }
}

pub async fn root() -> &'static str {
    "Tessera is running. Tenants live under /t/<slug>; see /t/default/.well-known/openid-configuration."
}

pub async fn not_found(State(state): State<AppState>) -> Response {
    crate::error::unknown_tenant_page(&state.pages)
}
