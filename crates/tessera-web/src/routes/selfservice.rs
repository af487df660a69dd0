//! The hosted sign-in and sign-up pages over the self-service flows. Forms work without
//! JavaScript; every POST answers with a re-rendered form or a 303.

use super::authorize::{advance, csrf_for, load_request, page_tenant};
use super::{add_cookie, current_session, see_other, tenant_path};
use crate::error::{busy_page, store_failure_page};
use crate::pages::Brand;
use crate::request::{CSRF_COOKIE, cookie, cookie_name, origin, parse_form, session_cookie_base, set_cookie};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;
use minijinja::value::Serde;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tessera_core::model::{Flow, FlowKind, Session, Tenant, User};
use tessera_selfservice::flow::{self, Submitted};
use tessera_selfservice::login::{self, LoginError};
use tessera_selfservice::registration::{self, SignUpError, SignUpForm};
use uuid::Uuid;

#[derive(Deserialize)]
pub struct FlowRef {
    flow: Option<Uuid>,
}

const EXPIRED_NOTICE: &str = "That took a while, so we refreshed the form. Please try again.";
const INVALID_CREDENTIALS: &str = "The email or password is incorrect.";

fn csrf_cookie(state: &AppState, headers: &HeaderMap) -> Option<String> {
    cookie(headers, &cookie_name(CSRF_COOKIE, state.config.secure_cookies())).map(str::to_owned)
}

/// Starts a flow of `kind` (keeping an authorization request, if any) and redirects to it.
async fn start_flow(
    state: &AppState,
    tenant: &Tenant,
    kind: FlowKind,
    request: Option<Uuid>,
    hint: Option<String>,
    headers: &HeaderMap,
) -> Response {
    match flow::start(&state.selfservice, tenant, kind, request, hint, csrf_cookie(state, headers).as_deref()).await {
        Ok((flow, csrf)) => {
            let mut response = see_other(&flow_url(tenant, &flow));
            add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, None, state.config.secure_cookies()));
            response
        }
        Err(e) => store_failure_page(&state.pages, &Brand::of(tenant), &e),
    }
}

fn flow_url(tenant: &Tenant, flow: &Flow) -> String {
    let page = match flow.kind {
        FlowKind::Login => "/login",
        FlowKind::Registration => "/registration",
    };
    tenant_path(tenant, &format!("{page}?flow={}", flow.id))
}

/// The sign-in page that belongs to a sign-up flow and vice versa, keeping the return target.
fn switch_url(tenant: &Tenant, flow: &Flow, to: FlowKind) -> String {
    let page = if to == FlowKind::Login { "/login" } else { "/registration" };
    match flow.authorization_request_id {
        Some(r) => tenant_path(tenant, &format!("{page}?request={r}")),
        None => tenant_path(tenant, page),
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    flow: Option<Uuid>,
    request: Option<Uuid>,
}

/// Shared GET logic: show the flow, or start one when there is none / it is not ours.
async fn show(state: AppState, slug: String, q: PageQuery, headers: HeaderMap, kind: FlowKind) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(flow_id) = q.flow else {
        let hint = match q.request {
            Some(r) => match load_request(&state, &tenant, Some(r), &headers).await {
                Ok(request) => request.login_hint,
                Err(page) => return page,
            },
            None => None,
        };
        return start_flow(&state, &tenant, kind, q.request, hint, &headers).await;
    };
    let cookie = csrf_cookie(&state, &headers);
    match flow::load(&state.selfservice, &tenant, kind, flow_id, cookie.as_deref()).await {
        Ok(Submitted::Valid(flow)) => {
            render(&state, &tenant, &flow, cookie.as_deref().unwrap_or_default(), StatusCode::OK, Form::default())
        }
        Ok(Submitted::Expired(old)) => match flow::successor(&state.selfservice, &tenant, &old, cookie.as_deref()).await {
            Ok((flow, csrf)) => {
                render(&state, &tenant, &flow, &csrf, StatusCode::OK, Form { notice: Some(EXPIRED_NOTICE), ..Form::default() })
            }
            Err(e) => store_failure_page(&state.pages, &Brand::of(&tenant), &e),
        },
        // Not this browser's flow (or gone): a fresh one, without anyone else's return target.
        Ok(Submitted::Rejected) => start_flow(&state, &tenant, kind, None, None, &headers).await,
        Err(e) => store_failure_page(&state.pages, &Brand::of(&tenant), &e),
    }
}

pub async fn login_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    show(state, slug, q, headers, FlowKind::Login).await
}

pub async fn registration_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    show(state, slug, q, headers, FlowKind::Registration).await
}

/// What a re-rendered form shows.
#[derive(Default)]
struct Form<'a> {
    email: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    errors: HashMap<&'static str, String>,
    form_error: Option<&'a str>,
    notice: Option<&'a str>,
}

fn render(state: &AppState, tenant: &Tenant, flow: &Flow, csrf: &str, status: StatusCode, form: Form<'_>) -> Response {
    let brand = Brand::of(tenant);
    let email = form.email.or_else(|| flow.login_hint.clone());
    let common = context! {
        action => flow_url(tenant, flow),
        csrf_token => csrf,
        email => email,
        errors => Serde(&form.errors),
        form_error => form.form_error,
        notice => form.notice,
    };
    let mut response = match flow.kind {
        FlowKind::Login => state.pages.render(status, "login.html", &brand, context! { registration_url => switch_url(tenant, flow, FlowKind::Registration), ..common }),
        FlowKind::Registration => state.pages.render(
            status,
            "registration.html",
            &brand,
            context! {
                login_url => switch_url(tenant, flow, FlowKind::Login),
                ask_names => state.selfservice.config.require_names,
                given_name => form.given_name,
                family_name => form.family_name,
                password_hint => format!("At least {} characters. Spaces and any characters are welcome.", state.selfservice.config.password.min_length),
                ..common
            },
        ),
    };
    add_cookie(&mut response, &set_cookie(CSRF_COOKIE, csrf, None, state.config.secure_cookies()));
    response
}

/// Checks the submitted flow. `Err` is the response to send instead (successor or restart).
async fn submitted_flow(
    state: &AppState,
    tenant: &Tenant,
    kind: FlowKind,
    flow_id: Option<Uuid>,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Flow, String), Response> {
    let cookie = csrf_cookie(state, headers);
    let brand = Brand::of(tenant);
    let Some(flow_id) = flow_id else {
        return Err(start_flow(state, tenant, kind, None, None, headers).await);
    };
    match flow::check(&state.selfservice, tenant, kind, flow_id, cookie.as_deref(), form.get("csrf_token").map(String::as_str)).await {
        Ok(Submitted::Valid(flow)) => Ok((flow, cookie.unwrap_or_default())),
        Ok(Submitted::Expired(old)) => match flow::successor(&state.selfservice, tenant, &old, cookie.as_deref()).await {
            Ok((flow, csrf)) => {
                let keep = Form { email: form.get("email").cloned(), notice: Some(EXPIRED_NOTICE), ..Form::default() };
                Err(render(state, tenant, &flow, &csrf, StatusCode::OK, keep))
            }
            Err(e) => Err(store_failure_page(&state.pages, &brand, &e)),
        },
        Ok(Submitted::Rejected) => Err(state.pages.message(
            StatusCode::FORBIDDEN,
            &brand,
            "Please start again",
            "This form could not be verified (it may have been opened in another browser, or cookies are blocked).",
        )),
        Err(e) => Err(store_failure_page(&state.pages, &brand, &e)),
    }
}

/// After a successful sign-in or sign-up: a new session (and a new cookie value), then back
/// to the application or to the account page.
async fn signed_in(
    state: &AppState,
    tenant: &Tenant,
    flow: &Flow,
    user: &User,
    origin: &tessera_core::event::RequestOrigin,
    headers: &HeaderMap,
) -> Response {
    let brand = Brand::of(tenant);
    let csrf = csrf_cookie(state, headers).unwrap_or_default();
    // Deleting the flow decides double submits: only the first one proceeds.
    match state.selfservice.store.delete_flow(tenant.id, flow.id).await {
        Ok(true) => {}
        Ok(false) => return see_other(&flow_url(tenant, flow)),
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    }
    // The browser's previous session (an earlier sign-in, or one planted in it) ends here, so
    // only the new cookie value works from now on (ASVS 7.2.4).
    match current_session(state, tenant, headers).await {
        Ok(Some(previous)) => {
            if let Err(e) = tessera_selfservice::session::end(&state.selfservice, tenant, &previous, origin).await {
                return store_failure_page(&state.pages, &brand, &e);
            }
        }
        Ok(None) => {}
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    }
    let (token, session): (String, Session) =
        match tessera_selfservice::session::start(&state.selfservice, tenant, user, &["pwd"], origin, flow.kind.as_str()).await {
            Ok(s) => s,
            Err(e) => return store_failure_page(&state.pages, &brand, &e),
        };
    let mut response = match flow.authorization_request_id {
        Some(id) => match load_request(state, tenant, Some(id), headers).await {
            Ok(request) => advance(state, tenant, &request, Some(&session), Some(&csrf)).await,
            Err(page) => page,
        },
        None => see_other(&tenant_path(tenant, "/account")),
    };
    let secure = state.config.secure_cookies();
    add_cookie(
        &mut response,
        &set_cookie(&session_cookie_base(&tenant.slug), &token, Some(state.selfservice.config.session_lifetime_secs), secure),
    );
    response
}

/// A submitted sign-in or sign-up form, checked: its tenant, its flow (valid and this
/// browser's), the CSRF token, the fields and where the request came from.
struct Submit {
    tenant: Arc<Tenant>,
    flow: Flow,
    csrf: String,
    form: HashMap<String, String>,
    origin: tessera_core::event::RequestOrigin,
}

async fn submit(
    state: &AppState,
    slug: &str,
    kind: FlowKind,
    flow_id: Option<Uuid>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Submit, Response> {
    let tenant = page_tenant(state, slug).await?;
    // Turn a spike away before any database work (see PasswordHasherPool::is_saturated).
    if state.selfservice.hasher.is_saturated() {
        return Err(busy_page(&state.pages, &Brand::of(&tenant)));
    }
    let form = parse_form(body).unwrap_or_default();
    let (flow, csrf) = submitted_flow(state, &tenant, kind, flow_id, &form, headers).await?;
    let origin = origin(headers, Some(peer), &state.config.trusted_proxies);
    Ok(Submit { tenant, flow, csrf, form, origin })
}

pub async fn login_submit(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<FlowRef>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Submit { tenant, flow, csrf, form, origin } = match submit(&state, &slug, FlowKind::Login, q.flow, peer, &headers, &body).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let email = form.get("email").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    match login::verify_password(&state.selfservice, &tenant, &email, &password, &origin).await {
        Ok(user) => signed_in(&state, &tenant, &flow, &user, &origin, &headers).await,
        Err(LoginError::InvalidCredentials) => render(
            &state,
            &tenant,
            &flow,
            &csrf,
            StatusCode::BAD_REQUEST,
            Form { email: Some(email), form_error: Some(INVALID_CREDENTIALS), ..Form::default() },
        ),
        Err(LoginError::Busy(tessera_selfservice::HashError::Overloaded)) => busy_page(&state.pages, &Brand::of(&tenant)),
        Err(LoginError::Busy(e)) => store_failure_page(&state.pages, &Brand::of(&tenant), &e),
        Err(LoginError::Store(e)) => store_failure_page(&state.pages, &Brand::of(&tenant), &e),
    }
}

pub async fn registration_submit(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<FlowRef>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Submit { tenant, flow, csrf, form, origin } =
        match submit(&state, &slug, FlowKind::Registration, q.flow, peer, &headers, &body).await {
            Ok(s) => s,
            Err(r) => return r,
        };
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let sign_up = SignUpForm {
        email: field("email"),
        password: field("password"),
        given_name: field("given_name"),
        family_name: field("family_name"),
    };
    let keep = |errors: HashMap<&'static str, String>, form_error: Option<&'static str>| Form {
        email: Some(sign_up.email.clone()),
        given_name: Some(sign_up.given_name.clone()),
        family_name: Some(sign_up.family_name.clone()),
        errors,
        form_error,
        notice: None,
    };
    match registration::sign_up(&state.selfservice, &tenant, &sign_up, &origin, "password").await {
        Ok(user) => signed_in(&state, &tenant, &flow, &user, &origin, &headers).await,
        Err(SignUpError::Invalid(errors)) => {
            let errors = errors.into_iter().map(|e| (e.field, capitalise(&e.text))).collect();
            render(&state, &tenant, &flow, &csrf, StatusCode::BAD_REQUEST, keep(errors, Some("Please correct the highlighted fields.")))
        }
        Err(SignUpError::EmailTaken) => {
            let errors = HashMap::from([("email", "An account with this email already exists. Sign in instead.".to_owned())]);
            render(&state, &tenant, &flow, &csrf, StatusCode::BAD_REQUEST, keep(errors, Some("We could not create this account.")))
        }
        Err(SignUpError::Busy(tessera_selfservice::HashError::Overloaded)) => busy_page(&state.pages, &Brand::of(&tenant)),
        Err(SignUpError::Busy(e)) => store_failure_page(&state.pages, &Brand::of(&tenant), &e),
        Err(SignUpError::Store(e)) => store_failure_page(&state.pages, &Brand::of(&tenant), &e),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + ".",
        None => String::new(),
    }
}

/// A minimal account page: who is signed in, and a way out.
pub async fn account_page(State(state): State<AppState>, Path(slug): Path<String>, headers: HeaderMap) -> Response {
    let tenant = match page_tenant(&state, &slug).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let brand = Brand::of(&tenant);
    let session = match current_session(&state, &tenant, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return see_other(&tenant_path(&tenant, "/login")),
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    let user = match state.selfservice.store.find_user(tenant.id, session.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => return see_other(&tenant_path(&tenant, "/login")),
        Err(e) => return store_failure_page(&state.pages, &brand, &e),
    };
    let (csrf, fresh) = csrf_for(&state, &headers);
    let mut response = state.pages.render(
        StatusCode::OK,
        "message.html",
        &brand,
        context! {
            heading => "You're signed in",
            message => format!("Signed in as {}.", user.email),
            user_email => user.email,
            logout_action => tenant_path(&tenant, "/oauth2/logout"),
            csrf_token => csrf.clone(),
        },
    );
    if fresh {
        add_cookie(&mut response, &set_cookie(CSRF_COOKIE, &csrf, None, state.config.secure_cookies()));
    }
    response
}
