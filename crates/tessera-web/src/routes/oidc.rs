//! The machine-facing OpenID Connect endpoints: discovery, JWKS, token, userinfo,
//! introspection, revocation and dynamic registration. All answer in RFC 6749/6750 shape.

use crate::error::{bearer_error, no_store, oauth_error, unknown_tenant_json};
use crate::request::{basic_credentials, bearer, into_params, origin, parse_form};
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use tessera_core::model::{Client, Tenant};
use tessera_oauth::OAuthError;
use tessera_oauth::client_auth::{PresentedCredentials, authenticate_client};
use tessera_oauth::{introspection, registration, token};

/// Loads the tenant or answers 404 problem+json.
async fn tenant(state: &AppState, slug: &str) -> Result<Arc<Tenant>, Response> {
    match state.tenant(slug).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(unknown_tenant_json()),
        Err(e) => {
            tracing::error!(error = %e, "loading tenant failed");
            Err(oauth_error(&OAuthError::server_error(), false))
        }
    }
}

fn public_json(body: impl IntoResponse, max_age: u32) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    response
}

pub async fn discovery(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    match tenant(&state, &slug).await {
        Ok(t) => public_json(Json(tessera_oauth::discovery::metadata(&state.oauth.issuer(&t))), 300),
        Err(r) => r,
    }
}

pub async fn jwks(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    let t = match tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match state.oauth.keys.tenant_keys(state.oauth.store.as_ref(), t.id).await {
        Ok(keys) => public_json(([(header::CONTENT_TYPE, "application/json")], keys.jwks_json.to_string()), 60),
        Err(e) => {
            tracing::error!(error = %e, "loading keys failed");
            oauth_error(&OAuthError::server_error(), false)
        }
    }
}

/// Client authentication shared by token, introspection and revocation.
async fn authenticated_client(
    state: &AppState,
    tenant: &Tenant,
    headers: &HeaderMap,
    form: &mut std::collections::HashMap<String, String>,
) -> Result<(Arc<Client>, bool), Response> {
    let basic = basic_credentials(headers).map_err(|e| oauth_error(&e, true))?;
    let creds = PresentedCredentials { basic, client_id: form.remove("client_id"), client_secret: form.remove("client_secret") };
    let used_basic = creds.used_basic();
    authenticate_client(&state.oauth, tenant, &creds).await.map(|c| (c, used_basic)).map_err(|e| oauth_error(&e, used_basic))
}

pub async fn token(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let t = match tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e, false),
    };
    let (client, used_basic) = match authenticated_client(&state, &t, &headers, &mut form).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params: token::TokenParams = match into_params(form) {
        Ok(p) => p,
        Err(e) => return oauth_error(&e, used_basic),
    };
    let origin = origin(&headers, Some(peer), &state.config.trusted_proxies);
    match token::exchange(&state.oauth, &t, &client, &params, &origin).await {
        Ok(tokens) => {
            let mut response = Json(tokens).into_response();
            no_store(&mut response);
            response
        }
        Err(e) => oauth_error(&e, used_basic),
    }
}

async fn userinfo(state: AppState, slug: String, token: Option<String>) -> Response {
    let t = match tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(token) = token else {
        return bearer_error(&OAuthError { code: "invalid_request", description: "a bearer token is required".into(), status: 401 });
    };
    match introspection::userinfo(&state.oauth, &t, &token).await {
        Ok(claims) => {
            let mut response = Json(claims).into_response();
            no_store(&mut response);
            response
        }
        Err(e) => bearer_error(&e),
    }
}

pub async fn userinfo_get(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap) -> Response {
    let token = bearer(&headers).map(str::to_owned);
    userinfo(state, slug, token).await
}

/// POST accepts the token in the header or, per RFC 6750 §2.2, in a form body.
pub async fn userinfo_post(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let from_body = parse_form(&body).ok().and_then(|mut f| f.remove("access_token"));
    let token = match (bearer(&headers), from_body) {
        (Some(_), Some(_)) => return bearer_error(&OAuthError::invalid_request("send the token in one place only")),
        (Some(h), None) => Some(h.to_owned()),
        (None, b) => b,
    };
    userinfo(state, slug, token).await
}

/// A client's request about one token (introspection, revocation): the tenant, the
/// authenticated client, whether it used Basic, and the `token` parameter.
struct TokenRequest {
    tenant: Arc<Tenant>,
    client: Arc<Client>,
    used_basic: bool,
    token: String,
}

async fn token_request(state: &AppState, slug: &str, headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, Response> {
    let tenant = tenant(state, slug).await?;
    let mut form = parse_form(body).map_err(|e| oauth_error(&e, false))?;
    let (client, used_basic) = authenticated_client(state, &tenant, headers, &mut form).await?;
    let token = form.remove("token").ok_or_else(|| oauth_error(&OAuthError::invalid_request("token is missing"), used_basic))?;
    Ok(TokenRequest { tenant, client, used_basic, token })
}

pub async fn introspect(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let r = match token_request(&state, &slug, &headers, &body).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match introspection::introspect(&state.oauth, &r.tenant, &r.client, &r.token).await {
        Ok(body) => {
            let mut response = Json(body).into_response();
            no_store(&mut response);
            response
        }
        Err(e) => oauth_error(&e, r.used_basic),
    }
}

pub async fn revoke(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let r = match token_request(&state, &slug, &headers, &body).await {
        Ok(r) => r,
        Err(response) => return response,
    };
    match introspection::revoke(&state.oauth, &r.tenant, &r.client, &r.token).await {
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            no_store(&mut response);
            response
        }
        Err(e) => oauth_error(&e, r.used_basic),
    }
}

pub async fn register(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let t = match tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let metadata: registration::ClientMetadata = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(_) => return oauth_error(&OAuthError::invalid_client_metadata("the body must be a JSON object of client metadata"), false),
    };
    match registration::register(&state.oauth, &t, bearer(&headers), &metadata).await {
        Ok(body) => {
            let mut response = (StatusCode::CREATED, Json(body)).into_response();
            no_store(&mut response);
            response
        }
        Err(e) if e.code == "invalid_token" => bearer_error(&e),
        Err(e) => oauth_error(&e, false),
    }
}
