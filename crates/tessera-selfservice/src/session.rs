//! Server-side sessions. The browser holds a random 256-bit token; the store holds only its
//! hash. A new token is minted at every sign-in (no fixation), and a session ends on
//! sign-out, after the idle timeout, or at its absolute lifetime.

use crate::SelfService;
use tessera_core::event::RequestOrigin;
use tessera_core::model::{Session, Tenant, User};
use tessera_core::{EventKind, NewEvent, secret};
use tessera_store::StoreResult;
use time::Duration;
use uuid::Uuid;

/// Activity is recorded at most this often, so a busy browser does not write on every request.
const TOUCH_INTERVAL: Duration = Duration::minutes(1);

/// Starts a session for a customer who just authenticated; returns the cookie token.
pub async fn start(
    svc: &SelfService,
    tenant: &Tenant,
    user: &User,
    amr: &[&str],
    origin: &RequestOrigin,
    flow: &str,
) -> StoreResult<(String, Session)> {
    let token = secret::random_token();
    let now = svc.clock.now();
    let session = Session {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        token_hash: secret::hash_token(&token),
        user_id: user.id,
        auth_time: now,
        amr: amr.iter().map(|s| (*s).to_owned()).collect(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + Duration::seconds(svc.config.session_lifetime_secs),
        ended_at: None,
    };
    let event = NewEvent::new(tenant.id, EventKind::SignIn, now)
        .user(user.id)
        .origin(origin)
        .data(serde_json::json!({ "method": amr.first().copied().unwrap_or("pwd"), "flow": flow, "session_id": session.id }));
    svc.store.create_session(&session, &event).await?;
    Ok((token, session))
}

/// The live session a cookie token names, if any.
pub async fn resolve(svc: &SelfService, tenant: &Tenant, token: &str) -> StoreResult<Option<Session>> {
    let Some(session) = svc.store.find_session_by_token_hash(tenant.id, &secret::hash_token(token)).await? else {
        return Ok(None);
    };
    let now = svc.clock.now();
    let idle_limit = session.last_seen_at + Duration::seconds(svc.config.session_idle_timeout_secs);
    if session.ended_at.is_some() || session.expires_at <= now || idle_limit <= now {
        return Ok(None);
    }
    if now - session.last_seen_at >= TOUCH_INTERVAL {
        svc.store.touch_session(tenant.id, session.id, now).await?;
    }
    Ok(Some(session))
}

/// Ends a session (sign-out).
pub async fn end(svc: &SelfService, tenant: &Tenant, session: &Session, origin: &RequestOrigin) -> StoreResult<()> {
    let event = NewEvent::new(tenant.id, EventKind::SignOut, svc.clock.now())
        .user(session.user_id)
        .origin(origin)
        .data(serde_json::json!({ "session_id": session.id }));
    svc.store.end_session(tenant.id, session.id, &event).await
}
