//! Sign-in and sign-up flows as stored objects.
//!
//! ```text
//!  start ──▶ pending ──submit ok──▶ deleted (session issued)
//!              │  └──submit invalid──▶ pending (form re-rendered)
//!              └──expires──▶ submit creates a successor with the same return target
//! ```
//! A flow is bound to the browser that started it: it stores the hash of that browser's
//! CSRF cookie, and a submit must carry the same token in the form and in the cookie.

use crate::SelfService;
use tessera_core::model::{Flow, FlowKind, Tenant};
use tessera_core::secret;
use tessera_store::StoreResult;
use time::Duration;
use uuid::Uuid;

/// Starts a flow. `csrf_cookie` is the browser's existing CSRF token, reused so several tabs
/// work; a new one is minted when the browser has none. Returns the flow and the token to
/// set as cookie and form field.
pub async fn start(
    svc: &SelfService,
    tenant: &Tenant,
    kind: FlowKind,
    authorization_request_id: Option<Uuid>,
    login_hint: Option<String>,
    csrf_cookie: Option<&str>,
) -> StoreResult<(Flow, String)> {
    let csrf = csrf_cookie.filter(|c| c.len() == 43).map(str::to_owned).unwrap_or_else(secret::random_token);
    let now = svc.clock.now();
    let flow = Flow {
        id: Uuid::new_v4(),
        tenant_id: tenant.id,
        kind,
        csrf_token_hash: secret::hash_token(&csrf),
        authorization_request_id,
        login_hint: login_hint.filter(|h| h.len() <= 320),
        created_at: now,
        expires_at: now + Duration::seconds(svc.config.flow_ttl_secs),
    };
    svc.store.create_flow(&flow).await?;
    Ok((flow, csrf))
}

/// What a submitted flow id and CSRF pair amount to.
#[derive(Debug)]
pub enum Submitted {
    Valid(Flow),
    /// Valid but expired: carry its return target into a successor.
    Expired(Flow),
    /// Unknown flow, another kind, or not this browser's: start over.
    Rejected,
}

/// Loads a flow for display (GET): it must exist, be of `kind` and belong to this browser.
pub async fn load(svc: &SelfService, tenant: &Tenant, kind: FlowKind, flow_id: Uuid, csrf_cookie: Option<&str>) -> StoreResult<Submitted> {
    check(svc, tenant, kind, flow_id, csrf_cookie, csrf_cookie).await
}

/// Checks a submit: the form's CSRF token equals the cookie's, and the flow was started by
/// the browser holding that cookie.
pub async fn check(
    svc: &SelfService,
    tenant: &Tenant,
    kind: FlowKind,
    flow_id: Uuid,
    csrf_cookie: Option<&str>,
    csrf_form: Option<&str>,
) -> StoreResult<Submitted> {
    let (Some(cookie), Some(form)) = (csrf_cookie, csrf_form) else {
        return Ok(Submitted::Rejected);
    };
    if !secret::constant_time_eq(cookie, form) {
        return Ok(Submitted::Rejected);
    }
    let Some(flow) = svc.store.find_flow(tenant.id, flow_id).await? else {
        return Ok(Submitted::Rejected);
    };
    if flow.kind != kind || !secret::token_matches_hash(cookie, &flow.csrf_token_hash) {
        return Ok(Submitted::Rejected);
    }
    if flow.expires_at <= svc.clock.now() {
        return Ok(Submitted::Expired(flow));
    }
    Ok(Submitted::Valid(flow))
}

/// Replaces an expired flow by a fresh one that keeps its return target and hint.
pub async fn successor(svc: &SelfService, tenant: &Tenant, expired: &Flow, csrf_cookie: Option<&str>) -> StoreResult<(Flow, String)> {
    svc.store.delete_flow(tenant.id, expired.id).await?;
    start(svc, tenant, expired.kind, expired.authorization_request_id, expired.login_hint.clone(), csrf_cookie).await
}
