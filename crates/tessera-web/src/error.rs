//! The one place errors become HTTP: RFC 6749 JSON on OAuth endpoints, RFC 6750 challenges on
//! resource endpoints, `application/problem+json` on other APIs, friendly pages in browsers.
//! Internal causes are logged, never returned.

use crate::pages::{Brand, Pages};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tessera_oauth::OAuthError;

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// No caching of anything that carries tokens or token errors (RFC 6749 §5.1).
pub fn no_store(response: &mut Response) {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An RFC 6749 §5.2 error. `basic_challenge` adds `WWW-Authenticate: Basic` to a 401 when the
/// client tried Basic authentication.
pub fn oauth_error(err: &OAuthError, basic_challenge: bool) -> Response {
    let mut response =
        (status(err.status), Json(serde_json::json!({ "error": err.code, "error_description": err.description }))).into_response();
    no_store(&mut response);
    if err.status == 503 {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if err.status == 401 && basic_challenge {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tessera\", charset=\"UTF-8\""));
    }
    response
}

/// An RFC 6750 §3 bearer-token error.
pub fn bearer_error(err: &OAuthError) -> Response {
    let mut response = oauth_error(err, false);
    let code = if err.status == 401 && err.code != "invalid_token" { None } else { Some(err.code) };
    let challenge = match code {
        Some(code) => format!("Bearer realm=\"tessera\", error=\"{code}\""),
        None => "Bearer realm=\"tessera\"".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// An RFC 9457 problem document.
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({ "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// 503 with `Retry-After` when the password-hashing pool is full.
pub fn busy_page(pages: &Pages, brand: &Brand) -> Response {
    let mut response = pages.message(
        StatusCode::SERVICE_UNAVAILABLE,
        brand,
        "We're busy",
        "Lots of people are signing in right now. Please try again in a moment.",
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    response
}

/// A page for a failure on our side; the cause was logged by the caller.
pub fn internal_page(pages: &Pages, brand: &Brand) -> Response {
    pages.message(
        StatusCode::INTERNAL_SERVER_ERROR,
        brand,
        "Something went wrong",
        "Please try again. If it keeps happening, contact the site's support.",
    )
}

/// Logs a store failure and renders the generic page.
pub fn store_failure_page(pages: &Pages, brand: &Brand, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "storage failure while serving a page");
    internal_page(pages, brand)
}

pub fn unknown_tenant_page(pages: &Pages) -> Response {
    pages.message(StatusCode::NOT_FOUND, &Brand::neutral(), "Not found", "There is nothing at this address.")
}

pub fn unknown_tenant_json() -> Response {
    problem(StatusCode::NOT_FOUND, "Not Found", "unknown tenant")
}
