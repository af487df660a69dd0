//! The browser side of the authorization endpoint: validate, then walk the customer through
//! sign-in / sign-up / consent and back, and finally redirect with the code. The hosted pages
//! are our in-process implementation of the engine's login and consent boundary.

use super::{add_cookie, current_session, see_other, tenant_path};
use crate::error::{store_failure_page, unknown_tenant_page};
use crate::pages::Brand;
use crate::request::{CSRF_COOKIE, cookie, parse_form, set_cookie};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use minijinja::value::Serde;
use serde::Deserialize;
use std::sync::Arc;
use tessera_core::model::{AuthorizationRequest, Consent, FlowKind, Session, Tenant};
use tessera_core::{EventKind, NewEvent, secret};
use tessera_oauth::OAuthError;
use tessera_oauth::authorize::{self, AuthorizeError, AuthorizeParams, NextStep};
use uuid::Uuid;

pub(crate) async fn page_tenant(state: &AppState, slug: &str) -> Result<Arc<Tenant>, Response> {
    match state.tenant(slug).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(unknown_tenant_page(&state.pages)),
        Err(e) => Err(store_failure_page(&state.pages, &Brand::neutral(), &e)),
    }
}

fn error_page(state: &AppState, tenant: &Tenant, err: &OAuthError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST);
    let status = if status.is_server_error() { status } else { StatusCode::BAD_REQUEST };
    state.pages.message(
        status,
        &Brand::of(tenant),
        "This sign-in link is not valid",
        &format!("The application sent an invalid request ({}: {}).", err.code, err.description),
    )
}

pub async fn authorize_get(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    authorize(state, slug, query.unwrap_or_default().into_bytes(), headers).await
}

/// OIDC Core §3.1.2.1: the authorization endpoint also accepts POSTed forms.
pub async fn authorize_post(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    authorize(state, slug, body.to_vec(), headers).await
}

async fn authorize(state: AppState, slug: String, raw: Vec<u8>, headers: HeaderMap) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let params: AuthorizeParams = match parse_form(&raw).and_then(crate::request::into_params) {
        Ok(p) => p,
        // Without trustworthy parameters there is no trusted redirect URI: show a page.
        Err(e) => return error_page(&state, &tenant, &e),
    };
    // The request is bound to this browser's CSRF cookie (minted now if it has none).
    let (csrf, fresh) = csrf_for(&state, &headers);
    let request = match authorize::validate(&state.oauth, &tenant, &params, Some(secret::hash_token(&csrf))).await {
        Ok(r) => r,
        Err(AuthorizeError::Page(e)) => return error_page(&state, &tenant, &e),
        Err(AuthorizeError::Redirect(location)) => return see_other(&location),
    };
    let session = match current_session(&state, &tenant, &headers).await {
        Ok(s) => s,
        Err(e) => return store_failure_page(&state.pages, &Brand::of(&tenant), &e),
    };
    let mut response = advance(&state, &tenant, &request, session.as_ref(), Some(&csrf)).await;
    if fresh && !response.headers().contains_key(axum::http::header::SET_COOKIE) {
        add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, None, state.config.secure_cookies()));
    }
    response
}

#[derive(Deserialize)]
pub struct RequestRef {
    request: Option<Uuid>,
}

/// Where a finished sign-in or sign-up returns to.
pub async fn continue_authorization(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<RequestRef>,
    headers: HeaderMap,
) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let brand = Brand::of(&tenant);
    let request = match load_request(&state, &tenant, q.request, &headers).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let session = match current_session(&state, &tenant, &headers).await {
        Ok(s) => s,
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    advance(
        &state,
        &tenant,
        &request,
        session.as_ref(),
        cookie(&headers, &crate::request::cookie_name(CSRF_COOKIE, state.config.secure_cookies())),
    )
    .await
}

/// Loads a pending authorization request for the browser that started it. Another browser
/// (no cookie, or a different one) gets the "expired" page: a planted request id is useless.
pub(crate) async fn load_request(
    state: &AppState,
    tenant: &Tenant,
    id: Option<Uuid>,
    headers: &HeaderMap,
) -> Result<AuthorizationRequest, Response> {
    let brand = Brand::of(tenant);
    let gone = || {
        state.pages.message(
            StatusCode::BAD_REQUEST,
            &brand,
            "This sign-in has expired",
            "Please go back to the application and start signing in again.",
        )
    };
    let Some(id) = id else { return Err(gone()) };
    match state.oauth.store.find_authorization_request(tenant.id, id).await {
        Ok(Some(r)) if r.expires_at > state.oauth.clock.now() && is_same_browser(state, headers, &r) => Ok(r),
        Ok(_) => Err(gone()),
        Err(e) => Err(store_failure_page(&state.pages, &brand, &e)),
    }
}

fn is_same_browser(state: &AppState, headers: &HeaderMap, request: &AuthorizationRequest) -> bool {
    match &request.browser_binding {
        Some(binding) => cookie(headers, &crate::request::cookie_name(CSRF_COOKIE, state.config.secure_cookies()))
            .is_some_and(|c| secret::token_matches_hash(c, binding)),
        None => true,
    }
}

/// Takes the customer to the next step of an authorization request.
pub(crate) async fn advance(
    state: &AppState,
    tenant: &Tenant,
    request: &AuthorizationRequest,
    session: Option<&Session>,
    csrf_cookie: Option<&str>,
) -> Response {
    let brand = Brand::of(tenant);
    let step = match authorize::next_step(&state.oauth, tenant, request, session).await {
        Ok(s) => s,
        Err(e) => return error_page(state, tenant, &e),
    };
    let kind = match step {
        NextStep::SignIn => FlowKind::Login,
        NextStep::SignUp => FlowKind::Registration,
        NextStep::Consent => return see_other(&tenant_path(tenant, &format!("/consent?request={}", request.id))),
        NextStep::Complete(login) => {
            return match authorize::complete(&state.oauth, tenant, request, &login).await {
                Ok(location) => see_other(&location),
                Err(e) => error_page(state, tenant, &e),
            };
        }
        NextStep::Fail(code) => {
            let error = match code.as_str() {
                "consent_required" => OAuthError::consent_required("the customer has not consented to this client"),
                _ => OAuthError::login_required("the customer must sign in"),
            };
            return match authorize::refuse(&state.oauth, tenant, request, &error).await {
                Ok(location) => see_other(&location),
                Err(e) => error_page(state, tenant, &e),
            };
        }
    };
    match tessera_selfservice::flow::start(&state.selfservice, tenant, kind, Some(request.id), request.login_hint.clone(), csrf_cookie)
        .await
    {
        Ok((flow, csrf)) => {
            let page = if kind == FlowKind::Login { "/login" } else { "/registration" };
            let mut response = see_other(&tenant_path(tenant, &format!("{page}?flow={}", flow.id)));
            add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, None, state.config.secure_cookies()));
            response
        }
        Err(e) => store_failure_page(&state.pages, &brand, &e),
    }
}

/// The CSRF token this browser holds, or a new one to set.
pub(crate) fn csrf_for(state: &AppState, headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, &crate::request::cookie_name(CSRF_COOKIE, state.config.secure_cookies())) {
        Some(c) if c.len() == 43 => (c.to_owned(), false),
        _ => (secret::random_token(), true),
    }
}

/// Double-submit check: the form field equals the (HttpOnly, SameSite) cookie.
pub(crate) fn csrf_ok(state: &AppState, headers: &HeaderMap, form_token: Option<&str>) -> bool {
    match (cookie(headers, &crate::request::cookie_name(CSRF_COOKIE, state.config.secure_cookies())), form_token) {
        (Some(c), Some(f)) if c.len() == 43 => secret::constant_time_eq(c, f),
        _ => false,
    }
}

fn scope_descriptions(request: &AuthorizationRequest) -> Vec<String> {
    request
        .scope
        .iter()
        .map(|s| match s {
            "openid" => "Know who you are".to_owned(),
            "profile" => "See your name".to_owned(),
            "email" => "See your email address".to_owned(),
            "offline_access" => "Stay signed in when you are not using it".to_owned(),
            other => format!("Use \"{other}\""),
        })
        .collect()
}

pub async fn consent_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<RequestRef>,
    headers: HeaderMap,
) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let brand = Brand::of(&tenant);
    let request = match load_request(&state, &tenant, q.request, &headers).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (csrf, fresh) = csrf_for(&state, &headers);
    let session = match current_session(&state, &tenant, &headers).await {
        Ok(s) => s,
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    let Some(session) = session else {
        return advance(&state, &tenant, &request, None, Some(&csrf)).await;
    };
    let (client, user) =
        match (state.oauth.client(tenant.id, &request.client_id).await, state.oauth.store.find_user(tenant.id, session.user_id).await) {
            (Ok(Some(c)), Ok(Some(u))) => (c, u),
            (Err(e), _) | (_, Err(e)) => return store_failure_page(&state.pages, &brand, &e),
            _ => return advance(&state, &tenant, &request, None, Some(&csrf)).await,
        };
    let mut response = state.pages.render(
        StatusCode::OK,
        "consent.html",
        &brand,
        context! {
            action => tenant_path(&tenant, &format!("/consent?request={}", request.id)),
            csrf_token => csrf.clone(),
            client_name => &client.name,
            user_email => user.email,
            scopes => Serde(scope_descriptions(&request)),
        },
    );
    if fresh {
        add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, None, state.config.secure_cookies()));
    }
    response
}

pub async fn consent_submit(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<RequestRef>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let brand = Brand::of(&tenant);
    let form = parse_form(&body).unwrap_or_default();
    if !csrf_ok(&state, &headers, form.get("csrf_token").map(String::as_str)) {
        return state.pages.message(
            StatusCode::FORBIDDEN,
            &brand,
            "Please try again",
            "This form could not be verified. Go back to the application and start again.",
        );
    }
    let request = match load_request(&state, &tenant, q.request, &headers).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let session = match current_session(&state, &tenant, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return advance(&state, &tenant, &request, None, form.get("csrf_token").map(String::as_str)).await,
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    let now = state.oauth.clock.now();
    let allow = form.get("decision").map(String::as_str) == Some("allow");
    let event = NewEvent::new(tenant.id, if allow { EventKind::ConsentGranted } else { EventKind::ConsentDenied }, now)
        .user(session.user_id)
        .client(&request.client_id)
        .data(serde_json::json!({ "scope": request.scope.to_string() }));
    if !allow {
        if let Err(e) = state.oauth.store.append_event(&event).await {
            return store_failure_page(&state.pages, &brand, &e);
        }
        return match authorize::refuse(&state.oauth, &tenant, &request, &OAuthError::access_denied("the customer denied the request")).await
        {
            Ok(location) => see_other(&location),
            Err(e) => error_page(&state, &tenant, &e),
        };
    }
    let previous = match state.oauth.store.find_consent(tenant.id, session.user_id, &request.client_id).await {
        Ok(c) => c,
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    let scopes = previous.map(|c| c.scopes.union(&request.scope)).unwrap_or_else(|| request.scope.clone());
    let consent = Consent { tenant_id: tenant.id, user_id: session.user_id, client_id: request.client_id.clone(), scopes, granted_at: now };
    if let Err(e) = state.oauth.store.save_consent(&consent, &event).await {
        return store_failure_page(&state.pages, &brand, &e);
    }
    match authorize::complete(&state.oauth, &tenant, &request, &(&session).into()).await {
        Ok(location) => see_other(&location),
        Err(e) => error_page(&state, &tenant, &e),
    }
}
