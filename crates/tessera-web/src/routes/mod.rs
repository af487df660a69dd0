//! The routers. Every tenant lives under `/t/<slug>`, which is also its issuer path.

mod authorize;
mod logout;
mod oidc;
mod ops;
mod selfservice;

use crate::state::AppState;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::time::{Duration, Instant};
use tessera_core::model::{Session, Tenant};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Largest request body accepted anywhere (forms, registration JSON).
const BODY_LIMIT_BYTES: usize = 64 * 1024;

pub fn app(state: AppState) -> Router {
    let tenant_routes = Router::new()
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route("/jwks.json", get(oidc::jwks))
        .route("/brand.css", get(ops::brand_css))
        .route("/oauth2/authorize", get(authorize::authorize_get).post(authorize::authorize_post))
        .route("/oauth2/continue", get(authorize::continue_authorization))
        .route("/oauth2/token", post(oidc::token))
        .route("/oauth2/userinfo", get(oidc::userinfo_get).post(oidc::userinfo_post))
        .route("/oauth2/introspect", post(oidc::introspect))
        .route("/oauth2/revoke", post(oidc::revoke))
        .route("/oauth2/register", post(oidc::register))
        .route("/oauth2/logout", get(logout::logout_get).post(logout::logout_post))
        .route("/login", get(selfservice::login_page).post(selfservice::login_submit))
        .route("/registration", get(selfservice::registration_page).post(selfservice::registration_submit))
        .route("/consent", get(authorize::consent_page).post(authorize::consent_submit))
        .route("/account", get(selfservice::account_page));
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .nest("/t/{tenant}", tenant_routes)
        .route("/.well-known/oauth-authorization-server/t/{tenant}", get(oidc::discovery))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/assets/tessera.css", get(ops::stylesheet))
        .route("/", get(ops::root))
        .fallback(ops::not_found)
        .layer(middleware::from_fn(record_metrics))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // Only the path: query strings carry codes, tokens and hints.
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                // Microseconds: most requests take well under one, which "0 ms" hid.
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Request count and latency by route template (never by raw path, which holds tenant slugs
/// and ids), and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tessera_http_requests_total", "route" => route.clone(), "method" => method, "status" => status).increment(1);
    metrics::histogram!("tessera_http_request_duration_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}

/// 303 See Other: after a POST the browser must GET the next page, never re-POST (RFC 9700 §4.12).
pub(crate) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            response.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            tracing::error!("redirect target is not a valid header value");
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn add_cookie(response: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The browser's live session for a tenant, if any.
pub(crate) async fn current_session(
    state: &AppState,
    tenant: &Tenant,
    headers: &axum::http::HeaderMap,
) -> tessera_store::StoreResult<Option<Session>> {
    let name = crate::request::cookie_name(&crate::request::session_cookie_base(&tenant.slug), state.config.secure_cookies());
    match crate::request::cookie(headers, &name) {
        Some(token) if !token.is_empty() => tessera_selfservice::session::resolve(&state.selfservice, tenant, token).await,
        _ => Ok(None),
    }
}

pub(crate) fn tenant_path(tenant: &Tenant, rest: &str) -> String {
    format!("/t/{}{rest}", tenant.slug)
}
