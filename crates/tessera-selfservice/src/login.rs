//! The password strategy of the sign-in flow. An unknown email, a wrong password and a
//! disabled account give the same answer after the same work (one Argon2 verification), so
//! neither the response nor its timing tells them apart.

use crate::{HashError, SelfService};
use tessera_core::email::canonicalize_email;
use tessera_core::event::RequestOrigin;
use tessera_core::model::{Tenant, User};
use tessera_core::password_policy::normalize_password;
use tessera_core::{EventKind, NewEvent};
use tessera_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the email or password is incorrect")]
    InvalidCredentials,
    #[error(transparent)]
    Busy(#[from] HashError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks an email and password; on success returns the customer (no session yet).
pub async fn verify_password(
    svc: &SelfService,
    tenant: &Tenant,
    email: &str,
    password: &str,
    origin: &RequestOrigin,
) -> Result<User, LoginError> {
    let user = match canonicalize_email(email) {
        Ok(canonical) => svc.store.find_user_by_email(tenant.id, canonical.as_str()).await?,
        Err(_) => None,
    };
    let normalized = normalize_password(password);
    let stored_hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let verification = svc.hasher.verify(normalized.clone(), stored_hash).await?;
    let now = svc.clock.now();
    let failure = match &user {
        None => Some("unknown_user"),
        Some(_) if !verification.matches => Some("wrong_password"),
        Some(u) if u.disabled => Some("account_disabled"),
        Some(_) => None,
    };
    if let Some(reason) = failure {
        let mut event = NewEvent::new(tenant.id, EventKind::SignIn, now).failure(reason).origin(origin);
        if let Some(u) = &user {
            event = event.user(u.id);
        }
        svc.store.append_event(&event).await?;
        metrics::counter!("tessera_sign_ins_total", "outcome" => reason).increment(1);
        return Err(LoginError::InvalidCredentials);
    }
    let user = user.ok_or(LoginError::InvalidCredentials)?;
    if verification.needs_rehash {
        // Parameters were raised since this hash was made: upgrade it now that we hold the
        // password. A failure here must not fail the sign-in.
        match svc.hasher.hash(normalized).await {
            Ok(hash) => {
                if let Err(e) = svc.store.update_user_password_hash(tenant.id, user.id, &hash, now).await {
                    tracing::warn!(error = %e, "password rehash could not be stored");
                }
            }
            Err(e) => tracing::warn!(error = %e, "password rehash skipped"),
        }
    }
    metrics::counter!("tessera_sign_ins_total", "outcome" => "success").increment(1);
    Ok(user)
}
