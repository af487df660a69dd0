//! The password strategy of the sign-up flow: validate the form, apply the password policy,
//! hash on the bounded pool and create the customer. The database's unique index on the
//! canonical email decides races between concurrent sign-ups.

use crate::{HashError, SelfService};
use tessera_core::email::canonicalize_email;
use tessera_core::event::RequestOrigin;
use tessera_core::model::{Tenant, User};
use tessera_core::password_policy::normalize_password;
use tessera_core::{EventKind, NewEvent};
use tessera_store::StoreError;
use uuid::Uuid;

#[derive(Debug, Default, Clone)]
pub struct SignUpForm {
    pub email: String,
    pub password: String,
    pub given_name: String,
    pub family_name: String,
}

/// A problem with one field, with a stable message id for translations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message_id: &'static str,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    #[error("the form has errors")]
    Invalid(Vec<FieldError>),
    /// The email belongs to an existing account (or lost a concurrent race for it).
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    Busy(#[from] HashError),
    #[error(transparent)]
    Store(StoreError),
}

const MAX_NAME_CHARS: usize = 100;

fn clean_name(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.chars().filter(|c| !c.is_control()).collect())
}

pub async fn sign_up(
    svc: &SelfService,
    tenant: &Tenant,
    form: &SignUpForm,
    origin: &RequestOrigin,
    method: &str,
) -> Result<User, SignUpError> {
    let mut errors = Vec::new();
    let canonical = match canonicalize_email(&form.email) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(FieldError { field: "email", message_id: "email.invalid", text: e.to_string() });
            None
        }
    };
    let given_name = clean_name(&form.given_name);
    let family_name = clean_name(&form.family_name);
    if svc.config.require_names {
        if given_name.is_none() {
            errors.push(FieldError { field: "given_name", message_id: "given_name.required", text: "enter your given name".into() });
        }
        if family_name.is_none() {
            errors.push(FieldError { field: "family_name", message_id: "family_name.required", text: "enter your family name".into() });
        }
    }
    for (field, value) in [("given_name", &given_name), ("family_name", &family_name)] {
        if value.as_ref().is_some_and(|v| v.chars().count() > MAX_NAME_CHARS) {
            errors.push(FieldError { field, message_id: "name.too_long", text: format!("use at most {MAX_NAME_CHARS} characters") });
        }
    }
    let local_part = canonical.as_ref().map(|c| c.local_part().to_owned()).unwrap_or_default();
    if let Err(rejection) = svc.config.password.check(&form.password, &[&tenant.name, &tenant.slug, &local_part]) {
        errors.push(FieldError { field: "password", message_id: rejection.message_id(), text: rejection.to_string() });
    }
    let Some(canonical) = canonical.filter(|_| errors.is_empty()) else {
        return Err(SignUpError::Invalid(errors));
    };
    // Cheap duplicate check before spending a hash; the unique index still decides races.
    if svc.store.find_user_by_email(tenant.id, canonical.as_str()).await.map_err(SignUpError::Store)?.is_some() {
        return Err(SignUpError::EmailTaken);
    }
    let hash = svc.hasher.hash(normalize_password(&form.password)).await?;
    let now = svc.clock.now();
    let user = User {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        email: form.email.trim().to_owned(),
        email_canonical: canonical.as_str().to_owned(),
        email_verified: false,
        password_hash: Some(hash),
        given_name,
        family_name,
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    let kind = if method == "admin" { EventKind::UserCreated } else { EventKind::UserRegistered };
    let event = NewEvent::new(tenant.id, kind, now).user(user.id).origin(origin).data(serde_json::json!({ "method": method }));
    match svc.store.create_user(&user, &event).await {
        Ok(()) => {
            metrics::counter!("tessera_sign_ups_total").increment(1);
            Ok(user)
        }
        Err(StoreError::Conflict(_)) => Err(SignUpError::EmailTaken),
        Err(e) => Err(SignUpError::Store(e)),
    }
}
