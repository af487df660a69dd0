//! RP-initiated logout and the hosted sign-out confirmation.

use super::authorize::{csrf_for, csrf_ok, page_tenant};
use super::{add_cookie, current_session, see_other, tenant_path};
use crate::error::store_failure_page;
use crate::pages::Brand;
use crate::request::{CSRF_COOKIE, clear_cookie, into_params, origin, parse_form, session_cookie_base, set_cookie};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use minijinja::value::Serde;
use std::collections::HashMap;
use std::net::SocketAddr;
use tessera_oauth::logout::{self, LogoutParams};

pub async fn logout_get(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let form = parse_form(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    handle(state, slug, peer, headers, form, false).await
}

pub async fn logout_post(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body).unwrap_or_default();
    // A POST from our own confirmation form (or account page) carries our CSRF token.
    let confirmed = csrf_ok(&state, &headers, form.get("csrf_token").map(String::as_str));
    handle(state, slug, peer, headers, form, confirmed).await
}

async fn handle(
    state: AppState,
    slug: String,
    peer: SocketAddr,
    headers: HeaderMap,
    mut form: HashMap<String, String>,
    confirmed: bool,
) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let brand = Brand::of(&tenant);
    form.remove("csrf_token");
    let params: LogoutParams = into_params(form).unwrap_or_default();
    let plan = match logout::plan(&state.oauth, &tenant, &params).await {
        Ok(p) => p,
        Err(e) => {
            return state.pages.message(StatusCode::BAD_REQUEST, &brand, "This sign-out link is not valid", &e.description);
        }
    };
    let session = match current_session(&state, &tenant, &headers).await {
        Ok(s) => s,
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    // A valid hint vouches only for its own customer: anyone can hold an ID token of their
    // own, so a hint naming someone else than this browser's customer must not sign them out
    // silently.
    let foreign_hint = session.as_ref().is_some_and(|s| !plan.needs_confirmation && plan.hinted_subject != Some(s.user_id));
    if (plan.needs_confirmation || foreign_hint) && !confirmed {
        let (csrf, fresh) = csrf_for(&state, &headers);
        let user_email = match &session {
            Some(s) => state.oauth.store.find_user(tenant.id, s.user_id).await.ok().flatten().map(|u| u.email),
            None => None,
        };
        let carry: Vec<(&str, String)> =
            [("client_id", &params.client_id), ("post_logout_redirect_uri", &params.post_logout_redirect_uri), ("state", &params.state)]
                .into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
                .collect();
        let mut response = state.pages.render(
            StatusCode::OK,
            "logout.html",
            &brand,
            context! { action => tenant_path(&tenant, "/oauth2/logout"), csrf_token => csrf.clone(), carry => Serde(carry), user_email => user_email },
        );
        if fresh {
            add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, None, state.config.secure_cookies()));
        }
        return response;
    }
    if let Some(session) = &session {
        let origin = origin(&headers, Some(peer), &state.config.trusted_proxies);
        if let Err(e) = tessera_selfservice::session::end(&state.selfservice, &tenant, session, &origin).await {
            return store_failure_page(&state.pages, &brand, &e);
        }
    }
    let mut response = match &plan.redirect {
        Some(location) => see_other(location),
        None => state.pages.message(StatusCode::OK, &brand, "You're signed out", "You can close this window."),
    };
    add_cookie(&mut response, &clear_cookie(&session_cookie_base(&tenant.slug), state.config.secure_cookies()));
    response
}
